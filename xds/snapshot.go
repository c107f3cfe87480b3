package xds

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"maps"
	"sync"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"github.com/kailash-gw/kailash/xds/translate"
)

// snapshot is what the cache serves every node: the resources by type and
// name, their versions, and one version for the whole. It implements
// cachev3.ResourceSnapshot itself, for two reasons that matter at 100,000
// tenants:
//   - cachev3.Snapshot.GetResources copies a type's whole map on every
//     call, and the cache calls it for every delta watch of every node on
//     every publish (and for every discovery request); here the maps are
//     immutable and shared.
//   - a one-tenant edit builds the next snapshot from this one (patch): the
//     maps of the types that changed are cloned and the tenant's entries
//     replaced, instead of translating, hashing and indexing every tenant.
//
// A snapshot is immutable once published; version is set by publishLocked.
type snapshot struct {
	// items is plain as the SotW cache takes it, made on its first call
	// (delta streams never need it; at 100,000 tenants each is a map of
	// 100,000–200,000 entries that a patch would otherwise copy).
	items    [types.UnknownType]lazyItems
	plain    [types.UnknownType]map[string]types.Resource
	versions [types.UnknownType]map[string]string
	// sum is the order-independent digest of every (type, name, version):
	// the sum, lane by lane, of each entry's SHA-256. A patch subtracts the
	// entries it replaces and adds the new ones, so a snapshot built from
	// scratch and one patched to the same resources have the same sum.
	sum     setSum
	version string
	// from and changes, for a patched snapshot until it is published, are
	// the snapshot it was made from and the changes made (the delta cache
	// answers from them); publishLocked clears them.
	from    *snapshot
	changes []change
}

var _ cachev3.ResourceSnapshot = (*snapshot)(nil)

// setSum is a multiset digest: four 64-bit lanes, each summed modulo 2^64.
type setSum [4]uint64

func entrySum(typ types.ResponseType, name, version string) setSum {
	h := sha256.New()
	var n [9]byte
	n[0] = byte(typ)
	binary.BigEndian.PutUint64(n[1:], uint64(len(name)))
	h.Write(n[:])
	h.Write([]byte(name))
	h.Write([]byte(version))
	var d [sha256.Size]byte
	h.Sum(d[:0])
	var s setSum
	for i := range s {
		s[i] = binary.BigEndian.Uint64(d[8*i:])
	}
	return s
}

func (s *setSum) add(o setSum) {
	for i := range s {
		s[i] += o[i]
	}
}

func (s *setSum) sub(o setSum) {
	for i := range s {
		s[i] -= o[i]
	}
}

// hash is the snapshot's hash (hex): the SHA-256 of the sum. Its first 16
// characters are the version Envoys see.
func (s setSum) hash() string {
	var b [32]byte
	for i, v := range s {
		binary.BigEndian.PutUint64(b[8*i:], v)
	}
	d := sha256.Sum256(b[:])
	return hex.EncodeToString(d[:])
}

// GetVersion is the snapshot's version for every type it serves.
func (s *snapshot) GetVersion(typeURL string) string {
	if cachev3.GetResponseType(typeURL) == types.UnknownType {
		return ""
	}
	return s.version
}

func (s *snapshot) GetResourcesAndTTL(typeURL string) map[string]types.ResourceWithTTL {
	if t := cachev3.GetResponseType(typeURL); t != types.UnknownType {
		return s.items[t].get(s.plain[t])
	}
	return nil
}

// lazyItems is one type's resources with their (no) TTLs, made once.
type lazyItems struct {
	once sync.Once
	m    map[string]types.ResourceWithTTL
}

func (l *lazyItems) get(plain map[string]types.Resource) map[string]types.ResourceWithTTL {
	l.once.Do(func() { l.m = withTTL(plain) })
	return l.m
}

func withTTL(plain map[string]types.Resource) map[string]types.ResourceWithTTL {
	m := make(map[string]types.ResourceWithTTL, len(plain))
	for name, r := range plain {
		m[name] = types.ResourceWithTTL{Resource: r}
	}
	return m
}

// GetResources is the type's map itself, never a copy: callers only read it.
func (s *snapshot) GetResources(typeURL string) map[string]types.Resource {
	if t := cachev3.GetResponseType(typeURL); t != types.UnknownType {
		return s.plain[t]
	}
	return nil
}

// ConstructVersionMap does nothing: the versions are made with the snapshot.
func (s *snapshot) ConstructVersionMap() error { return nil }

func (s *snapshot) GetVersionMap(typeURL string) map[string]string {
	if t := cachev3.GetResponseType(typeURL); t != types.UnknownType {
		return s.versions[t]
	}
	return nil
}

// newSnapshot indexes a whole translation, checks it is consistent (every
// route configuration and scope the listeners and scopes name is there) and
// computes every resource's version: the translator's digest where it has
// one, else the hash of the resource's deterministic encoding, as the
// snapshot cache would compute it. Each type is indexed on a goroutine of
// its own (at 100,000 tenants the route configurations and scopes are
// hundreds of thousands of entries); the result does not depend on it.
func newSnapshot(res *translate.Resources, digests translate.Digests) (*snapshot, error) {
	s, err := indexSnapshot(res, digests)
	if err != nil {
		return nil, err
	}
	cs := &cachev3.Snapshot{}
	for t := range s.plain {
		cs.Resources[t] = cachev3.Resources{Version: "pending", Items: withTTL(s.plain[t])}
	}
	if err := cs.Consistent(); err != nil {
		return nil, fmt.Errorf("snapshot is inconsistent: %w", err)
	}
	return s, nil
}

// indexSnapshot is newSnapshot without the consistency check.
func indexSnapshot(res *translate.Resources, digests translate.Digests) (*snapshot, error) {
	byType := resourcesByType(res)
	s := &snapshot{}
	var sums [types.UnknownType]setSum
	var errs [types.UnknownType]error
	var wg sync.WaitGroup
	for typ, list := range byType {
		t := cachev3.GetResponseType(typ)
		wg.Go(func() {
			plain := make(map[string]types.Resource, len(list))
			versions := make(map[string]string, len(list))
			for _, r := range list {
				v := ""
				if d, ok := digests[r]; ok {
					v = hex.EncodeToString(d)
				} else {
					b, err := cachev3.MarshalResource(r)
					if err != nil {
						errs[t] = err
						return
					}
					v = cachev3.HashResource(b)
				}
				name := cachev3.GetResourceName(r)
				plain[name] = r
				versions[name] = v
				sums[t].add(entrySum(t, name, v))
			}
			s.plain[t], s.versions[t] = plain, versions
		})
	}
	wg.Wait()
	for t := range errs {
		if errs[t] != nil {
			return nil, errs[t]
		}
		s.sum.add(sums[t])
	}
	return s, nil
}

// change is one resource of a patch: set to r at version, or removed (r nil).
type change struct {
	typ     types.ResponseType
	name    string
	r       types.Resource
	version string
}

// patch is s with changes applied (s is left as it is). Only the maps of the
// types changed are copied; a change that leaves a resource's version as it
// is (a tenant's scopes, when an edit touches only its routes) changes
// nothing and is dropped from the snapshot's changes.
func (s *snapshot) patch(changes []change) *snapshot {
	n := &snapshot{plain: s.plain, versions: s.versions, sum: s.sum, from: s}
	cloned := [types.UnknownType]bool{}
	for _, c := range changes {
		t := c.typ
		old, had := n.versions[t][c.name]
		if c.r == nil && !had || c.r != nil && had && old == c.version {
			continue
		}
		n.changes = append(n.changes, c)
		if !cloned[t] {
			cloned[t] = true
			n.plain[t] = cloneOrMake(s.plain[t])
			n.versions[t] = cloneOrMake(s.versions[t])
		}
		if had {
			n.sum.sub(entrySum(t, c.name, old))
		}
		if c.r == nil {
			delete(n.plain[t], c.name)
			delete(n.versions[t], c.name)
			continue
		}
		n.plain[t][c.name] = c.r
		n.versions[t][c.name] = c.version
		n.sum.add(entrySum(t, c.name, c.version))
	}
	if n.changes == nil {
		n.changes = []change{} // not nil: the delta cache then knows nothing changed
	}
	return n
}

func cloneOrMake[V any](m map[string]V) map[string]V {
	if m == nil {
		return map[string]V{}
	}
	return maps.Clone(m)
}
