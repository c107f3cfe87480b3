package translate

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"runtime"
	"sync"
	"sync/atomic"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"

	"github.com/kailash-gw/kailash/internal/config"
)

// Cache keeps the per-tenant pieces of the last translation, so that a
// config where one tenant changed re-translates (and re-hashes) that tenant
// only. A piece is keyed by a digest of everything it is built from: the
// tenant's IR (VirtualHost, as JSON: every field, present and future) and
// the global IR fields the per-tenant builders read. The output is the same
// as without a cache, byte for byte.
//
// A Cache is not safe for concurrent use; the zero value is ready. Each
// translation keeps only the pieces it used, so the cache never outgrows the
// current config.
type Cache struct {
	vhs map[digest]*cachedVH
	// next collects the pieces used by the translation in progress.
	next map[digest]*cachedVH
}

type digest [sha256.Size]byte

// cachedVH is one translated virtual host and the digest of its
// deterministic encoding. Both are immutable once cached: the same
// *routev3.VirtualHost is shared by successive snapshots.
type cachedVH struct {
	vh  *routev3.VirtualHost
	sum digest
	// tenant is, in per-tenant mode, the tenant's route configuration and
	// scopes built around vh (nil until built).
	tenant *tenantRoutes
}

// Digests are the precomputed content digests of some of a translation's
// resources (keyed by the resource itself), so that hashing a snapshot does
// not re-encode what did not change. Resources not in the map are hashed by
// encoding them.
type Digests map[types.Resource][]byte

// TranslateCached is TranslateWith, reusing and refreshing c (nil: no
// cache). The resources whose digest it knows are in the returned Digests.
func TranslateCached(cfg *config.Config, in Inputs, c *Cache) (*Resources, Digests, error) {
	ir, err := BuildIRWith(cfg, in)
	if err != nil {
		return nil, nil, err
	}
	return fromIR(ir, c)
}

// begin starts a translation with c; end keeps only the pieces it used.
func (c *Cache) begin() {
	c.next = make(map[digest]*cachedVH, len(c.vhs))
}

func (c *Cache) end(ok bool) {
	if ok {
		c.vhs = c.next
	}
	// On failure the previous pieces stay (the last good config is still
	// the one served), plus nothing of the failed one.
	c.next = nil
}

// globalKey is what the per-tenant builders read outside the tenant's
// VirtualHost.
type globalKey struct {
	AuthHTTP  *Address
	RateLimit *RateLimit
	HTTPS     *HTTPS
	PerTenant bool
}

// vhKey digests the inputs of one virtual host built by build (named by
// kind) for route configuration rcName.
func vhKey(h hash.Hash, global []byte, rcName, kind string, vh *VirtualHost) (digest, error) {
	b, err := json.Marshal(vh)
	if err != nil {
		return digest{}, err
	}
	h.Reset()
	for _, part := range [][]byte{global, []byte(rcName), []byte(kind), b} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		h.Write(n[:])
		h.Write(part)
	}
	var d digest
	h.Sum(d[:0])
	return d, nil
}

// sumProto is the digest of m's deterministic encoding.
func sumProto(m proto.Message) (digest, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return digest{}, err
	}
	return sha256.Sum256(b), nil
}

// globalDigest is the encoding of ir's fields that the per-tenant builders
// read.
func globalDigest(ir *IR) ([]byte, error) {
	b, err := json.Marshal(globalKey{AuthHTTP: ir.AuthHTTP, RateLimit: ir.RateLimit, HTTPS: ir.HTTPS, PerTenant: ir.PerTenant})
	if err != nil {
		return nil, fmt.Errorf("cache key: %w", err)
	}
	return b, nil
}

// newCachedVH validates and digests a virtual host just built.
func newCachedVH(v *routev3.VirtualHost, err error) (*cachedVH, error) {
	if err == nil {
		err = v.ValidateAll()
	}
	var sum digest
	if err == nil {
		sum, err = sumProto(v)
	}
	if err != nil {
		return nil, err
	}
	return &cachedVH{vh: v, sum: sum}, nil
}

// virtualHosts is the cache entry of each of ir's virtual hosts, in order,
// for route configuration rcName(vh) and builder kind (a name for what build
// makes): the last translation's entry when the inputs are unchanged, else
// build's, made on every core (a start, or many tenants changed at once).
// Every failure is reported, in tenant order, naming the tenant. The entries
// are kept for the next translation.
func (c *Cache) virtualHosts(ir *IR, rcName func(*VirtualHost) string, kind string, build func(*VirtualHost) (*cachedVH, error)) ([]*cachedVH, error) {
	global, err := globalDigest(ir)
	if err != nil {
		return nil, err
	}
	n := len(ir.VirtualHosts)
	keys := make([]digest, n)
	entries := make([]*cachedVH, n)
	errs := make([]error, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), n) {
		wg.Go(func() {
			h := sha256.New()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				vh := &ir.VirtualHosts[i]
				if keys[i], errs[i] = vhKey(h, global, rcName(vh), kind, vh); errs[i] != nil {
					continue
				}
				if entries[i] = c.vhs[keys[i]]; entries[i] == nil { // c.vhs is only read here
					entries[i], errs[i] = build(vh)
				}
			}
		})
	}
	wg.Wait()
	for i := range errs {
		if errs[i] != nil {
			errs[i] = fmt.Errorf("tenant %q: %w", ir.VirtualHosts[i].TenantID, errs[i])
			continue
		}
		c.next[keys[i]] = entries[i]
	}
	return entries, errors.Join(errs...)
}
