package policies

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
)

// planOf compiles one module and plans the cache of decision.
func planOf(t *testing.T, module, decision string) *cachePlan {
	t.Helper()
	m, err := ast.ParseModuleWithOpts("p.rego", module, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatal(err)
	}
	c := ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1)
	if c.Compile(map[string]*ast.Module{"p.rego": m}); c.Failed() {
		t.Fatal(c.Errors)
	}
	ref, err := DecisionRef(decision)
	if err != nil {
		t.Fatal(err)
	}
	return planCache(c, ref)
}

// The analysis finds exactly the input paths the rules reachable from the
// decision read: through rule references, function calls (and their
// arguments), `with`, else chains, comprehensions, imports and dynamic data
// references, and no path of a rule the decision cannot reach.
func TestCachePlanPaths(t *testing.T) {
	for _, tc := range []struct {
		name, module string
		want         []string
	}{
		{"direct and nested", `package a
import input.attributes.request.http as req
allow if { req.method == "GET"; input.attributes.request.http.headers["x-a"] == "1" }
`, []string{`input.attributes.request.http.headers["x-a"]`, "input.attributes.request.http.method"}},
		{"a longer path under a shorter one is dropped", `package a
allow if { input.a.b.c == 1; input.a.b == {} ; input.z == 1}
`, []string{"input.a.b", "input.z"}},
		{"array index and dynamic tail", `package a
allow if { input.parsed_path[0] == "people"; some k; input.h[k] == "x" }
`, []string{"input.h", "input.parsed_path[0]"}},
		{"functions, else and comprehensions", `package a
f(x) := y if { y := x == input.m } else := false
allow if { f(input.n); count([v | some v in input.list; v > input.min]) > 0 }
`, []string{"input.list", "input.m", "input.min", "input.n"}},
		{"with statements read their values and targets", `package a
inner if input.user == "alice"
allow if { inner with input.user as input.claims.sub }
`, []string{"input.claims.sub", "input.user"}},
		{"unreachable rules are not read", `package a
allow if input.method == "GET"
other if input.secret == "x"
`, []string{"input.method"}},
		{"dynamic data reference reaches every rule it may name", `package a
allow if { some name; data.a.checks[name] }
checks.one if input.one
checks.two if input.two
unrelated if input.three
`, []string{"input.one", "input.two"}},
		{"an input alias narrows to what is read through it", `package a
http := input.attributes.request.http
allow if { http.method == "GET"; some k; http.headers[k] == "x" }
`, []string{"input.attributes.request.http.headers", "input.attributes.request.http.method"}},
		{"an alias read whole (passed to a function) reads all of it", `package a
http := input.attributes.request.http
allow if { json.marshal(http) != ""; http.method == "GET" }
`, []string{"input.attributes.request.http"}},
		{"an alias with a second definition is not narrowed", `package a
http := input.a if input.x
http := input.b if not input.x
allow if http.method == "GET"
`, []string{"input.a", "input.b", "input.x"}},
		{"index of data read from input", `package a
allow if data.a.roles[input.role]
roles := {"admin": true}
`, []string{"input.role"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := planOf(t, tc.module, "a/allow")
			if p.bypass != "" {
				t.Fatalf("bypassed: %s", p.bypass)
			}
			if got := p.Paths(); !slices.Equal(got, tc.want) {
				t.Errorf("paths %q, want %q", got, tc.want)
			}
		})
	}
}

// Every way of reading the input without a bounded path, and every class of
// non-deterministic builtin, bypasses the cache with its reason — also when
// reached only through a function or a `with`.
func TestCachePlanBypass(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"input indexed by a variable", `some k; input[k] == 1`, BypassInputDynamic},
		{"input indexed by input", `input[input.k] == 1`, BypassInputDynamic},
		{"input as a whole", `x := input; x.a == 1`, BypassInputWhole},
		{"json.marshal(input)", `json.marshal(input) != ""`, BypassInputWhole},
		{"walk(input)", `walk(input, [p, v]); v == 1`, BypassInputWhole},
		{"object.get with a computed path", `object.get(input, [input.a], 0) == 1`, BypassInputWhole},
		{"with data as input", `data.a.q with data.a.z as input`, BypassInputWhole},
		{"time.now_ns", `time.now_ns() > 0`, BypassNondeterministic + "time.now_ns"},
		{"http.send", `http.send({"method": "GET", "url": "http://127.0.0.1:1"}).status_code == 200`, BypassNondeterministic + "http.send"},
		{"rand.intn", `rand.intn("x", 10) == 1`, BypassNondeterministic + "rand.intn"},
		{"uuid.rfc4122", `uuid.rfc4122("x") != ""`, BypassNondeterministic + "uuid.rfc4122"},
		{"net.lookup_ip_addr", `count(net.lookup_ip_addr("localhost")) > 0`, BypassNondeterministic + "net.lookup_ip_addr"},
		{"opa.runtime", `opa.runtime().version != ""`, BypassNondeterministic + "opa.runtime"},
		{"io.jwt.encode_sign", `io.jwt.encode_sign({"alg": "HS256"}, {}, {"kty": "oct", "k": "eA"}) != ""`, BypassNondeterministic + "io.jwt.encode_sign"},
		{"x509 verification (reads the clock, not marked by OPA)", `[ok, _] := crypto.x509.parse_and_verify_certificates(input.c); ok`, BypassNondeterministic + "crypto.x509.parse_and_verify_certificates"},
		{"through a function", `g(1)`, BypassNondeterministic + "time.now_ns"},
		{"mocked by with (the analysis does not trust mocks)", `time.now_ns() == 1 with time.now_ns as 1`, BypassNondeterministic + "time.now_ns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			module := "package a\nq if true\ng(x) if time.now_ns() > x\nallow if {\n" + tc.body + "\n}\n"
			p := planOf(t, module, "a/allow")
			if p.bypass != tc.want {
				t.Errorf("bypass %q, want %q (paths %q)", p.bypass, tc.want, p.Paths())
			}
		})
	}
	// A non-deterministic builtin in a rule the decision does not reach
	// does not bypass it.
	if p := planOf(t, "package a\nallow if input.x\nclock := time.now_ns()\n", "a/allow"); p.bypass != "" {
		t.Errorf("unreachable time.now_ns bypassed the cache: %s", p.bypass)
	}
	// io.jwt.decode_verify is cached, its entries bounded by the tokens.
	p := planOf(t, `package a
allow if { [ok, _, _] := io.jwt.decode_verify(input.token, {"secret": "s"}); ok }`, "a/allow")
	if p.bypass != "" || !p.boundedTime || !slices.Equal(p.Paths(), []string{"input.token"}) {
		t.Errorf("decode_verify plan: bypass %q bounded %v paths %q", p.bypass, p.boundedTime, p.Paths())
	}
}

// The key is made of the read paths only, and tells a missing value from a
// null one, and values of different types apart.
func TestCacheKey(t *testing.T) {
	p := &prepared{revision: "r1", generation: 1, plan: &cachePlan{paths: []ast.Ref{ast.MustParseRef("x.a")[1:], ast.MustParseRef("x.b")[1:]}}}
	key := func(s string) [32]byte { return p.key(ast.MustParseTerm(s).Value) }
	same := [][2]string{
		{`{"a": 1, "b": [1, 2]}`, `{"a": 1, "b": [1, 2], "unread": "x"}`},
		{`{"a": {"k": 1, "j": 2}}`, `{"a": {"j": 2, "k": 1}}`},
		{`{"a": {1, 2}}`, `{"a": {2, 1}}`},
	}
	for _, c := range same {
		if key(c[0]) != key(c[1]) {
			t.Errorf("%s and %s: different keys", c[0], c[1])
		}
	}
	differ := [][2]string{
		{`{"a": null}`, `{}`},
		{`{"a": "1"}`, `{"a": 1}`},
		{`{"a": ["x", "y"]}`, `{"a": ["xy"]}`},
		{`{"a": "x", "b": "y"}`, `{"a": "xy"}`},
		{`{"a": true}`, `{"a": "true"}`},
		{`{"a": {"k": [1]}}`, `{"a": {"k": 1}}`},
	}
	for _, c := range differ {
		if key(c[0]) == key(c[1]) {
			t.Errorf("%s and %s: the same key", c[0], c[1])
		}
	}
	q := &prepared{revision: "r1", generation: 2, plan: p.plan}
	if p.key(ast.MustParseTerm(`{"a": 1}`).Value) == q.key(ast.MustParseTerm(`{"a": 1}`).Value) {
		t.Error("two generations share a key")
	}
}

// hs256 is a compact JWS over claims with secret "s".
func hs256(t testing.TB, claims map[string]any) string {
	b64 := base64.RawURLEncoding.EncodeToString
	h, _ := json.Marshal(map[string]string{"alg": "HS256", "typ": "JWT"})
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	in := b64(h) + "." + b64(c)
	mac := hmac.New(sha256.New, []byte("s"))
	mac.Write([]byte(in))
	return in + "." + b64(mac.Sum(nil))
}

// The lifetime rule for io.jwt.decode_verify: an entry ends at the first
// exp or nbf after its evaluation (less 1 ms), never ends for a token with
// neither or a call with a fixed "time" constraint, and is not stored for a
// token whose claims cannot be read or another non-deterministic call.
func TestCacheTimeBound(t *testing.T) {
	t0 := time.Unix(2_000_000_000, 0)
	call := func(tok string, constraints string) builtins.NDBCache {
		ndb := builtins.NDBCache{}
		ndb.Put(decodeVerify, ast.NewArray(ast.StringTerm(tok), ast.MustParseTerm(constraints)), ast.Boolean(true))
		return ndb
	}
	sec := t0.Unix()
	for _, tc := range []struct {
		name       string
		ndb        builtins.NDBCache
		until      time.Time
		wantReason string
	}{
		{"exp ahead", call(hs256(t, map[string]any{"exp": sec + 60, "nbf": sec - 60}), `{"secret": "s"}`), t0.Add(time.Minute - time.Millisecond), ""},
		{"nbf ahead", call(hs256(t, map[string]any{"exp": sec + 600, "nbf": sec + 30}), `{"secret": "s"}`), t0.Add(30*time.Second - time.Millisecond), ""},
		{"already expired: constant", call(hs256(t, map[string]any{"exp": sec - 5}), `{"secret": "s"}`), time.Time{}, ""},
		{"no time claims", call(hs256(t, map[string]any{"sub": "x"}), `{"secret": "s"}`), time.Time{}, ""},
		{"time constraint given", call(hs256(t, map[string]any{"exp": sec + 1}), `{"secret": "s", "time": 1}`), time.Time{}, ""},
		{"exp not a number", call(hs256(t, map[string]any{"exp": "soon"}), `{"secret": "s"}`), time.Time{}, BypassUnboundedTime},
		{"not a JWS", call("a.b", `{"secret": "s"}`), time.Time{}, BypassUnboundedTime},
	} {
		t.Run(tc.name, func(t *testing.T) {
			until, reason := timeBound(tc.ndb, t0)
			if reason != tc.wantReason || !until.Equal(tc.until) {
				t.Errorf("until %v reason %q, want %v %q", until, reason, tc.until, tc.wantReason)
			}
		})
	}
	ndb := call(hs256(t, map[string]any{"exp": sec + 60}), `{"secret": "s"}`)
	ndb.Put("time.now_ns", ast.NewArray(), ast.Number("1"))
	if _, reason := timeBound(ndb, t0); reason != BypassNondeterministic+"time.now_ns" {
		t.Errorf("another non-deterministic call: reason %q", reason)
	}
}

// Through the engine: a cached decision over io.jwt.decode_verify turns
// when the token expires, as an uncached one does; a cached answer is a
// copy the caller may change; undefined decisions are cached too.
func TestCacheEngineExpiry(t *testing.T) {
	dir := t.TempDir()
	writeBundle(t, dir, `package a
default allow := false
allow if { [ok, _, _] := io.jwt.decode_verify(input.token, {"secret": "s"}); ok }
obj := {"allowed": allow, "headers": {"x": "1"}}
undef if input.never
`, `{}`)
	e, err := NewEngine(t.Context(), EngineOptions{Dir: dir, Decision: "a/allow", DecisionCache: 16})
	if err != nil {
		t.Fatal(err)
	}
	tok := hs256(t, map[string]any{"exp": float64(time.Now().Add(1500*time.Millisecond).UnixNano()) / 1e9})
	in := ast.MustParseTerm(`{"token": "` + tok + `"}`).Value
	if v, info, err := e.EvalInfo(t.Context(), in); err != nil || v != true || info.Cache != CacheMiss {
		t.Fatalf("first: %v %+v %v", v, info, err)
	}
	if v, info, err := e.EvalInfo(t.Context(), in); err != nil || v != true || info.Cache != CacheHit {
		t.Fatalf("second: %v %+v %v", v, info, err)
	}
	time.Sleep(time.Until(time.Now().Add(1600 * time.Millisecond)))
	if v, info, err := e.EvalInfo(t.Context(), in); err != nil || v != false || info.Cache != CacheMiss {
		t.Fatalf("after exp: %v %+v %v, want false from a fresh evaluation", v, info, err)
	}

	o, err := NewEngine(t.Context(), EngineOptions{Dir: dir, Decision: "a/obj", DecisionCache: 16})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		v, _, err := o.EvalInfo(t.Context(), in)
		if err != nil {
			t.Fatal(err)
		}
		m := v.(map[string]any)
		if h := m["headers"].(map[string]any); h["x"] != "1" {
			t.Fatalf("round %d: headers %v (a caller's change reached the cache)", i, h)
		}
		delete(m["headers"].(map[string]any), "x") // as the decision log's mask policy may
	}
	u, err := NewEngine(t.Context(), EngineOptions{Dir: dir, Decision: "a/undef", DecisionCache: 16})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []CacheOutcome{CacheMiss, CacheHit} {
		if _, info, err := u.EvalInfo(t.Context(), in); !errors.Is(err, ErrUndefined) || info.Cache != want {
			t.Fatalf("undefined: %+v %v, want %v", info, err, want)
		}
	}
}

func writeBundle(t testing.TB, dir, rego, data string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), []byte(rego), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data.json"), []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
