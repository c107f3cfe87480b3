package policies

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
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
allow if { input.attributes.request.http.headers["x-debug"] == "1"; req.method == "GET" }
`, `{"roles": {"guest": ["GET", "DELETE"]}}`},
	{cachePolicyA + `
allow if count(json.marshal(input)) > 4000
`, `{"roles": {"admin": ["GET"]}}`},
	// Other input paths (the query, the body, the source address, a
	// header indexed by a data value) and data read by a computed key.
	{cachePolicyA + `
allow if { input.parsed_query.debug[0] == data.debug; req.method == "GET" }
allow if { input.parsed_body.qty > data.max_qty; input.attributes.source.address.socketAddress.address == "10.0.0.1" }
allow if { some h in data.trusted_headers; req.headers[h] == "yes" }
`, `{"roles": {"guest": ["GET"]}, "debug": "on", "max_qty": 2, "trusted_headers": ["x-debug"]}`},
	// Non-deterministic builtins whose results here do not change the
	// decision (so it compares equal to the uncached one), but which the
	// cache must bypass (TestCacheNondeterministicNeverFrozen shows the
	// bypass matters).
	{cachePolicyA + `
allow if { time.now_ns() > 0; req.method == "DELETE"; input.parsed_path[0] == "admin" }
`, `{"roles": {"admin": ["GET"]}}`},
	{cachePolicyA + `
allow if { rand.intn("r", 1) == 0; req.method == "POST"; input.parsed_path[0] == "admin" }
`, `{"roles": {"admin": ["GET"]}}`},
	{cachePolicyA + `
allow if { http.send({"method": "GET", "url": "HTTP_SEND_URL"}).body.ok; req.headers["x-debug"] == "0" }
`, `{"roles": {"admin": ["GET"]}}`},
}

// cacheBypassReasons are the bypass reasons of cacheVariants.
var cacheBypassReasons = map[string]bool{
	BypassInputWhole:                       true,
	BypassNondeterministic + "time.now_ns": true,
	BypassNondeterministic + "rand.intn":   true,
	BypassNondeterministic + "http.send":   true,
}

// sendServer answers every request with {"ok": true}; variants' HTTP_SEND_URL is its URL.
func sendServer(t *testing.T) func(string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok": true}`)
	}))
	t.Cleanup(srv.Close)
	return func(rego string) string { return strings.ReplaceAll(rego, "HTTP_SEND_URL", srv.URL) }
}

const cachePolicyA = `package t
req := input.attributes.request.http
bearer := t if { parts := split(req.headers.authorization, " "); parts[0] == "Bearer"; t := parts[1] }
claims := c if { [ok, _, c] := io.jwt.decode_verify(bearer, {"secret": "s"}); ok }
default allow := false
allow if {
	req.method in data.roles[claims.role]
	input.parsed_path[0] == "people"
	tenant_ok with input.tenant as object.get(req.headers, "x-tenant", "a")
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
	url := sendServer(t)
	refs := map[string]*Engine{}
	for _, v := range cacheVariants {
		dir := t.TempDir()
		writeBundle(t, dir, url(v.rego), v.data)
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
		attrs := map[string]any{"request": map[string]any{"http": map[string]any{"method": pick("GET", "POST", "DELETE"), "path": path, "headers": headers, "id": fmt.Sprint(u.Int64())}}}
		if r.IntN(2) == 0 {
			attrs["source"] = map[string]any{"address": map[string]any{"socketAddress": map[string]any{"address": pick("10.0.0.1", "10.0.0.2"), "portValue": u.IntN(60000)}}}
		}
		doc := map[string]any{"attributes": attrs, "parsed_path": parsed}
		if r.IntN(2) == 0 {
			doc["parsed_query"] = map[string]any{"debug": []any{pick("on", "off")}, "utm": []any{fmt.Sprint(u.Int64())}}
		}
		if r.IntN(2) == 0 {
			doc["parsed_body"] = map[string]any{"qty": r.IntN(5), "note": fmt.Sprint(u.Int64())}
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
			writeBundle(t, dir, url(v.rego), v.data)
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
					if !cacheBypassReasons[info.Bypass] {
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

// A bypassed policy is evaluated afresh every time: a decision that shows
// time.now_ns, rand.intn (per-query, so it differs between evaluations
// only through a new query) or http.send's answer is never frozen by the
// cache. Two evaluations of one input give two clocks, and a changed HTTP
// answer is seen at once.
func TestCacheNondeterministicNeverFrozen(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `{"n": %d}`, n.Add(1))
	}))
	t.Cleanup(srv.Close)
	for _, tc := range []struct{ name, expr string }{
		{"time.now_ns", `time.now_ns()`},
		{"http.send", `http.send({"method": "GET", "url": "` + srv.URL + `", "force_json_decode": true}).body.n`},
		{"uuid.rfc4122", `uuid.rfc4122("x")`},
		{"rand.intn", `rand.intn("x", 1000000000)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeBundle(t, dir, "package t\nresult := {\"v\": "+tc.expr+", \"m\": input.method}\n", `{}`)
			e, err := NewEngine(t.Context(), EngineOptions{Dir: dir, Decision: "t/result", DecisionCache: 64})
			if err != nil {
				t.Fatal(err)
			}
			in := ast.MustParseTerm(`{"method": "GET"}`).Value
			seen := map[string]bool{}
			for range 5 {
				v, info, err := e.EvalInfo(t.Context(), in)
				if err != nil {
					t.Fatal(err)
				}
				if info.Cache != CacheBypass || info.Bypass != BypassNondeterministic+tc.name {
					t.Fatalf("cache outcome %v %q, want a bypass for %s", info.Cache, info.Bypass, tc.name)
				}
				seen[fmt.Sprint(v)] = true
				time.Sleep(time.Millisecond)
			}
			if len(seen) < 2 {
				t.Errorf("five evaluations gave one decision %v: frozen", seen)
			}
		})
	}
}
