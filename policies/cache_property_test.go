package policies

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// cacheVariants are the bundle versions the property test swaps between:
// the same policy over two data documents, a changed policy, and one the
// cache must bypass (it reads the input as a whole).
var cacheVariants = []struct{ rego, data string }{
	{cachePolicyA, `{"roles": {"admin": ["GET", "POST", "DELETE"], "guest": ["GET"]}}`},
	{cachePolicyA, `{"roles": {"admin": ["GET", "POST"], "guest": []}}`},
	{cachePolicyA + `
allow if { input.attributes.request.http.headers["x-debug"] == "1"; http.method == "GET" }
`, `{"roles": {"guest": ["GET", "DELETE"]}}`},
	{cachePolicyA + `
allow if count(json.marshal(input)) > 4000
`, `{"roles": {"admin": ["GET"]}}`},
}

const cachePolicyA = `package t
http := input.attributes.request.http
bearer := t if { parts := split(http.headers.authorization, " "); parts[0] == "Bearer"; t := parts[1] }
claims := c if { [ok, _, c] := io.jwt.decode_verify(bearer, {"secret": "s"}); ok }
default allow := false
allow if {
	http.method in data.roles[claims.role]
	input.parsed_path[0] == "people"
	tenant_ok with input.tenant as object.get(http.headers, "x-tenant", "a")
}
tenant_ok if input.tenant == "a"
tenant_ok if { input.tenant == "b"; claims.sub == "bob" }
result := {"allowed": allow, "headers": {"x-user": object.get(claims, "sub", "")}, "http_status": status}
status := 200 if allow
status := 403 if not allow
`

// Property: with bundle versions and data swapped underneath concurrent
// evaluations, every decision the cached engine gives (hit, miss or bypass)
// equals the decision an uncached engine of the same revision gives for
// the same input (random methods, paths, headers and token claims: roles,
// subjects, expired, not yet valid and badly signed tokens).
func TestCacheProperty(t *testing.T) {
	refs := map[string]*Engine{}
	for _, v := range cacheVariants {
		dir := t.TempDir()
		writeBundle(t, dir, v.rego, v.data)
		e, err := NewEngine(t.Context(), EngineOptions{Dir: dir, Decision: "t/result"})
		if err != nil {
			t.Fatal(err)
		}
		refs[e.Revision()] = e
	}
	if len(refs) != len(cacheVariants) {
		t.Fatalf("%d revisions for %d variants", len(refs), len(cacheVariants))
	}
	dir := t.TempDir()
	writeBundle(t, dir, cacheVariants[0].rego, cacheVariants[0].data)
	cached, err := NewEngine(t.Context(), EngineOptions{Dir: dir, Decision: "t/result", DecisionCache: 64})
	if err != nil {
		t.Fatal(err)
	}

	now := time.Now().Unix()
	var tokens []string
	for _, role := range []string{"admin", "guest", "none"} {
		for _, sub := range []string{"alice", "bob"} {
			for _, exp := range []any{now + 3600, now - 3600, nil} {
				c := map[string]any{"role": role, "sub": sub}
				if exp != nil {
					c["exp"] = exp
				}
				tokens = append(tokens, hs256(t, c))
			}
			tokens = append(tokens, hs256(t, map[string]any{"role": role, "sub": sub, "nbf": now + 3600}))
			tokens = append(tokens, hs256(t, map[string]any{"role": role, "sub": sub})+"x") // bad signature
		}
	}
	// input draws from r a request of a small space (so that decisions
	// repeat) with an unread part drawn from u (Envoy's stream id).
	input := func(r, u *rand.Rand) ast.Value {
		pick := func(s ...string) string { return s[r.IntN(len(s))] }
		path := pick("/people", "/people/alice", "/admin", "/people/bob/x", "/")
		headers := map[string]any{"user-agent": pick("curl", "go")} // read: the policy passes the headers object to object.get
		if r.IntN(8) > 0 {
			headers["authorization"] = "Bearer " + tokens[r.IntN(len(tokens))]
		}
		if r.IntN(2) == 0 {
			headers["x-tenant"] = pick("a", "b", "c")
		}
		if r.IntN(4) == 0 {
			headers["x-debug"] = pick("1", "0")
		}
		var parsed []any
		for _, seg := range splitPath(path) {
			parsed = append(parsed, seg)
		}
		doc := map[string]any{
			"attributes":  map[string]any{"request": map[string]any{"http": map[string]any{"method": pick("GET", "POST", "DELETE"), "path": path, "headers": headers, "id": fmt.Sprint(u.Int64())}}},
			"parsed_path": parsed,
		}
		if r.IntN(3) == 0 {
			doc["tenant"] = pick("a", "b") // overridden by the policy's with
		}
		v, err := ast.InterfaceToValue(doc)
		if err != nil {
			panic(err)
		}
		return v
	}

	var hits, misses, bypasses atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() { // bundle and data swaps
		r := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(r.IntN(20000)) * time.Microsecond):
			}
			v := cacheVariants[r.IntN(len(cacheVariants))]
			writeBundle(t, dir, v.rego, v.data)
			if err := cached.Reload(t.Context()); err != nil {
				t.Error(err)
				return
			}
		}
	})
	const workers, rounds = 4, 1500
	var evals sync.WaitGroup
	for w := range workers {
		evals.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for range rounds {
				in := input(rand.New(rand.NewPCG(uint64(r.IntN(300)), 3)), r)
				got, info, gerr := cached.EvalInfo(t.Context(), in)
				ref := refs[info.Revision]
				if ref == nil {
					t.Errorf("unknown revision %q", info.Revision)
					return
				}
				want, werr := ref.Eval(t.Context(), in)
				if !reflect.DeepEqual(got, want) || (gerr == nil) != (werr == nil) {
					t.Errorf("revision %s, cache %v: got %v (%v), uncached %v (%v)\ninput %v", info.Revision, info.Cache, got, gerr, want, werr, in)
					return
				}
				switch info.Cache {
				case CacheHit:
					hits.Add(1)
				case CacheMiss:
					misses.Add(1)
				case CacheBypass:
					if info.Bypass != BypassInputWhole {
						t.Errorf("bypass reason %q", info.Bypass)
					}
					bypasses.Add(1)
				}
			}
		})
	}
	evals.Wait()
	close(stop)
	wg.Wait()
	t.Logf("hits %d, misses %d, bypasses %d", hits.Load(), misses.Load(), bypasses.Load())
	if hits.Load() == 0 || misses.Load() == 0 || bypasses.Load() == 0 {
		t.Errorf("hits %d, misses %d, bypasses %d: the test did not exercise every path", hits.Load(), misses.Load(), bypasses.Load())
	}
}

func splitPath(p string) []string {
	var out []string
	start := 1
	for i := 1; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' {
			if i > start {
				out = append(out, p[start:i])
			}
			start = i + 1
		}
	}
	return out
}
