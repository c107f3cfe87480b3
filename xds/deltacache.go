package xds

import (
	"cmp"
	"context"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// deltaCache answers delta xDS watches from what changed between snapshots
// instead of comparing every resource of every stream on every publish, as
// go-control-plane's SnapshotCache does (createDeltaResponse: O(streams ×
// resources) per publish and again per ACK, >90% of xds's CPU during a
// fanned-out one-tenant edit at 100,000 tenants, and a new version map of
// every resource per stream per response). SotW watches and fetches go to
// sotw, the SnapshotCache, unchanged.
//
// Every node is served the same snapshot (publishLocked gives all of them
// the one snapshot), so the cache keeps one, not one per node.
//
// How a stream's state is known without a full comparison: the
// go-control-plane server keeps, per stream and type, the map of resources
// and versions the client has (Subscription.ReturnedResources) and hands
// it back with every watch. This cache updates that map in place (it is
// the stream's own; the server only touches it on the stream's goroutine
// after cancelling the watch, which takes mu, or after receiving the
// response from the watch's channel) and records in it, under syncedKey,
// the publish the map is up to date with. (On a stream's first request
// that map is the request's initial_resource_versions, which is changed
// with it; nothing reads it after the callbacks.) A watch whose map says publish k
// needs only the names changed since k (kept for the last maxHistory
// publishes) and the names its request subscribes or unsubscribes; any
// other watch (a new stream, a client's initial_resource_versions, a
// wildcard (un)subscription, k too old) is compared in full, once.
type deltaCache struct {
	sotw cachev3.Cache // SotW watches and fetches

	mu      sync.Mutex
	snap    *snapshot // nil until the first publish
	seq     uint64    // publishes seen; the first is 1
	history []changeSet
	watches map[uint64]*deltaWatch
	nextID  uint64
	keep    int // change sets kept: maxHistory (tests shorten it)

	// fullDiffs and changeDiffs count the responses worked out by a full
	// comparison and from change sets (tests, and the reason for the type).
	fullDiffs, changeDiffs uint64
}

var _ cachev3.Cache = (*deltaCache)(nil)

// syncedKey is the entry of a stream's returned-resources map that says
// which publish the map is up to date with. No resource has that name (a
// NUL byte); a client that names it in a request only costs itself a full
// comparison.
const syncedKey = "\x00kailash.synced"

// maxHistory bounds the change sets kept; maxChangeNames makes a publish
// that changes more names than that a reset: streams behind it are
// compared in full (as many names as there are resources, near enough).
const (
	maxHistory     = 256
	maxChangeNames = 4096
)

// changeSet is what one publish changed: the names set or removed, by type
// (nil with reset: too many to list), and their encodings, marshalled once
// for every stream sent them.
type changeSet struct {
	seq   uint64
	reset bool
	names [types.UnknownType][]string
	wire  map[types.Resource]func() ([]byte, error)
}

type deltaWatch struct {
	id  uint64
	typ types.ResponseType
	req *cachev3.DeltaRequest
	sub cachev3.Subscription
	ch  chan cachev3.DeltaResponse
}

func newDeltaCache(sotw cachev3.Cache) *deltaCache {
	return &deltaCache{sotw: sotw, watches: map[uint64]*deltaWatch{}, keep: maxHistory}
}

func (c *deltaCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, ch chan cachev3.Response) (func(), error) {
	return c.sotw.CreateWatch(req, sub, ch)
}

func (c *deltaCache) Fetch(ctx context.Context, req *cachev3.Request) (cachev3.Response, error) {
	return c.sotw.Fetch(ctx, req)
}

// publish makes snap the snapshot served and answers the open watches its
// changes concern. changes, when not nil, are the resources that differ
// between base and snap (a patch's); when base is not the snapshot served
// (or changes is nil) the two snapshots are compared instead.
func (c *deltaCache) publish(snap, base *snapshot, changes []change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	cs := changeSet{seq: c.seq}
	switch {
	case c.snap == nil:
		cs.reset = true
	case changes != nil && base == c.snap:
		for _, ch := range changes {
			cs.names[ch.typ] = append(cs.names[ch.typ], ch.name)
		}
		if len(changes) > maxChangeNames {
			cs.reset = true
		}
	default:
		cs.reset = !diffSnapshots(c.snap, snap, &cs.names)
	}
	if cs.reset {
		cs.names = [types.UnknownType][]string{}
	} else {
		cs.wire = map[types.Resource]func() ([]byte, error){}
		for t := range cs.names {
			for _, name := range cs.names[t] {
				if r, ok := snap.plain[t][name]; ok {
					cs.wire[r] = marshalOnce(r)
				}
			}
		}
	}
	c.snap = snap
	c.history = append(c.history, cs)
	if len(c.history) > c.keep {
		c.history = slices.Delete(c.history, 0, len(c.history)-c.keep)
	}
	// In type order (clusters before listeners before routes), as the
	// SnapshotCache orders an ADS node's watches; then oldest first.
	ws := make([]*deltaWatch, 0, len(c.watches))
	for _, w := range c.watches {
		ws = append(ws, w)
	}
	slices.SortFunc(ws, func(a, b *deltaWatch) int {
		return cmp.Or(cmp.Compare(a.typ, b.typ), cmp.Compare(a.id, b.id))
	})
	for _, w := range ws {
		if c.respondLocked(context.Background(), w.req, w.sub, w.typ, w.ch) {
			delete(c.watches, w.id)
		}
	}
}

// diffSnapshots lists the names whose versions differ between a and b; ok
// is false when there are more than maxChangeNames. Types whose maps are
// shared (a patch copies only those it changes) are skipped.
func diffSnapshots(a, b *snapshot, names *[types.UnknownType][]string) (ok bool) {
	n := 0
	for t := range b.versions {
		va, vb := a.versions[t], b.versions[t]
		if len(va) == 0 && len(vb) == 0 || samePointer(va, vb) {
			continue
		}
		for name, v := range vb {
			if old, found := va[name]; !found || old != v {
				names[t] = append(names[t], name)
				n++
			}
		}
		for name := range va {
			if _, found := vb[name]; !found {
				names[t] = append(names[t], name)
				n++
			}
		}
		if n > maxChangeNames {
			return false
		}
	}
	return true
}

func (c *deltaCache) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, ch chan cachev3.DeltaResponse) (func(), error) {
	t := cachev3.GetResponseType(req.GetTypeUrl())
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snap != nil && c.respondLocked(context.Background(), req, sub, t, ch) {
		return nil, nil
	}
	c.nextID++
	w := &deltaWatch{id: c.nextID, typ: t, req: req, sub: sub, ch: ch}
	c.watches[w.id] = w
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.watches, w.id)
	}, nil
}

// respondLocked sends the watch what its client lacks of the current
// snapshot, if anything (and, to a wildcard stream's first request, even
// nothing: Envoy waits for it to finish initialising), and brings the
// stream's map up to date either way. It reports whether it responded.
// The caller holds mu.
func (c *deltaCache) respondLocked(ctx context.Context, req *cachev3.DeltaRequest, sub cachev3.Subscription, t types.ResponseType, ch chan cachev3.DeltaResponse) bool {
	var resources map[string]types.Resource
	var versions map[string]string
	if t != types.UnknownType {
		resources, versions = c.snap.plain[t], c.snap.versions[t]
	}
	returned := sub.ReturnedResources()
	if returned == nil { // not from go-control-plane's server; never in practice
		returned = map[string]string{}
	}
	resp := &deltaResponse{req: req, version: c.snap.GetVersion(req.GetTypeUrl()), returned: returned, ctx: ctx}
	subscribed := sub.SubscribedResources()
	wildcard := sub.IsWildcard()
	send := func(name string, r types.Resource, v string, wire func() ([]byte, error)) {
		if wire == nil {
			wire = marshalOnce(r)
		}
		resp.items = append(resp.items, deltaItem{name: name, version: v, wire: wire})
		returned[name] = v
	}

	if names, wire, ok := c.changedSince(returned, req, t); ok {
		c.changeDiffs++
		seen := make(map[string]bool, len(names))
		for _, name := range names {
			if seen[name] || name == syncedKey {
				continue
			}
			seen[name] = true
			_, named := subscribed[name]
			inScope := wildcard || named
			r, exists := resources[name]
			prev, known := returned[name]
			switch {
			case inScope && exists:
				if v := versions[name]; !known || prev != v {
					send(name, r, v, wire[r])
				}
			case known && !exists && inScope:
				resp.removed = append(resp.removed, name)
				delete(returned, name)
			case known:
				delete(returned, name) // no longer subscribed: forgotten, as the SnapshotCache does
			}
		}
	} else {
		c.fullDiffs++
		if wildcard {
			for name, r := range resources {
				v := versions[name]
				if prev, known := returned[name]; !known || prev != v {
					send(name, r, v, nil)
				}
			}
			for name := range returned {
				if _, ok := resources[name]; !ok && name != syncedKey {
					resp.removed = append(resp.removed, name)
					delete(returned, name)
				}
			}
		} else {
			for name := range subscribed {
				r, exists := resources[name]
				prev, known := returned[name]
				switch {
				case name == syncedKey:
				case exists:
					if v := versions[name]; !known || prev != v {
						send(name, r, v, nil)
					}
				case known:
					resp.removed = append(resp.removed, name)
					delete(returned, name)
				}
			}
			for name := range returned {
				if _, ok := subscribed[name]; !ok && name != syncedKey {
					delete(returned, name)
				}
			}
		}
	}
	returned[syncedKey] = strconv.FormatUint(c.seq, 10)
	if len(resp.items) == 0 && len(resp.removed) == 0 && (!wildcard || req.GetResponseNonce() != "") {
		return false
	}
	select {
	case ch <- resp:
	case <-ctx.Done():
	}
	return true
}

// changedSince is the names that may differ between what the stream's map
// says its client has and the current snapshot, of type t, with the
// encodings of those that changed; ok is false when the map's publish is
// unknown or too old, or the request changes the wildcard subscription:
// then everything must be compared.
func (c *deltaCache) changedSince(returned map[string]string, req *cachev3.DeltaRequest, t types.ResponseType) (names []string, wire map[types.Resource]func() ([]byte, error), ok bool) {
	s, found := returned[syncedKey]
	if !found {
		return nil, nil, false
	}
	synced, err := strconv.ParseUint(s, 10, 64)
	if err != nil || synced > c.seq {
		return nil, nil, false
	}
	if slices.Contains(req.GetResourceNamesSubscribe(), "*") || slices.Contains(req.GetResourceNamesUnsubscribe(), "*") {
		return nil, nil, false
	}
	// The change sets after synced: history holds consecutive publishes,
	// the last one c.seq.
	first := len(c.history) - int(c.seq-synced)
	if first < 0 {
		return nil, nil, false
	}
	for _, cs := range c.history[first:] {
		if cs.reset {
			return nil, nil, false
		}
		if t >= types.UnknownType || len(cs.names[t]) == 0 {
			continue
		}
		names = append(names, cs.names[t]...)
		if wire == nil {
			wire = map[types.Resource]func() ([]byte, error){}
		}
		for r, f := range cs.wire {
			wire[r] = f
		}
	}
	names = append(names, req.GetResourceNamesSubscribe()...)
	names = append(names, req.GetResourceNamesUnsubscribe()...)
	return names, wire, true
}

// samePointer reports whether a and b are the same map (not only equal).
func samePointer[V any](a, b map[string]V) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// counts is (full comparisons, answers from change sets), for tests.
func (c *deltaCache) counts() (full, changes uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fullDiffs, c.changeDiffs
}

func marshalOnce(r types.Resource) func() ([]byte, error) {
	return sync.OnceValues(func() ([]byte, error) { return cachev3.MarshalResource(r) })
}

// deltaResponse is a cachev3.DeltaResponse; its resources are marshalled
// when the server first asks for the message, on the stream's goroutine.
type deltaResponse struct {
	req      *cachev3.DeltaRequest
	version  string
	items    []deltaItem
	removed  []string
	returned map[string]string
	ctx      context.Context

	once sync.Once
	msg  *discoveryv3.DeltaDiscoveryResponse
	err  error
}

type deltaItem struct {
	name, version string
	wire          func() ([]byte, error)
}

var _ cachev3.DeltaResponse = (*deltaResponse)(nil)

func (r *deltaResponse) GetDeltaDiscoveryResponse() (*discoveryv3.DeltaDiscoveryResponse, error) {
	r.once.Do(func() {
		out := make([]*discoveryv3.Resource, 0, len(r.items))
		for _, it := range r.items {
			b, err := it.wire()
			if err != nil {
				r.err = fmt.Errorf("marshalling %s: %w", it.name, err)
				return
			}
			out = append(out, &discoveryv3.Resource{Name: it.name, Version: it.version,
				Resource: &anypb.Any{TypeUrl: r.req.GetTypeUrl(), Value: b}})
		}
		r.items = nil // the message holds the encodings now
		r.msg = &discoveryv3.DeltaDiscoveryResponse{Resources: out, RemovedResources: r.removed,
			TypeUrl: r.req.GetTypeUrl(), SystemVersionInfo: r.version}
	})
	return r.msg, r.err
}

func (r *deltaResponse) GetDeltaRequest() *discoveryv3.DeltaDiscoveryRequest { return r.req }
func (r *deltaResponse) GetSystemVersion() (string, error)                   { return r.version, nil }
func (r *deltaResponse) GetResponseVersion() string                          { return r.version }
func (r *deltaResponse) GetNextVersionMap() map[string]string                { return r.returned }
func (r *deltaResponse) GetReturnedResources() map[string]string             { return r.returned }
func (r *deltaResponse) GetContext() context.Context                         { return r.ctx }
