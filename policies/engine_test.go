package policies

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// TestRegoTests runs the bundle's _test.rego files: a failing Rego test
// fails go test.
func TestRegoTests(t *testing.T) {
	results, err := RunTests(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(results) < 10 {
		t.Fatalf("only %d Rego tests ran", len(results))
	}
	for _, r := range results {
		switch {
		case r.Error != nil:
			t.Errorf("%s.%s (%s): error: %v", r.Package, r.Name, r.Location, r.Error)
		case r.Fail:
			t.Errorf("%s.%s (%s): FAIL %s", r.Package, r.Name, r.Location, r.Output)
		}
	}
}

func TestRunTestsReportsFailures(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "p/p.rego", "package p\nx := 1\n")
	write(t, dir, "p/p_test.rego", "package p\ntest_ok if x == 1\ntest_bad if x == 2\n")
	results, err := RunTests(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	fails := 0
	for _, r := range results {
		if r.Fail {
			fails++
		}
	}
	if len(results) != 2 || fails != 1 {
		t.Fatalf("results=%d fails=%d", len(results), fails)
	}
}

func input(t testing.TB, method, path string, roles ...string) ast.Value {
	t.Helper()
	segs := strings.Split(strings.TrimLeft(path, "/"), "/")
	arr := make([]*ast.Term, len(segs))
	for i, s := range segs {
		arr[i] = ast.StringTerm(s)
	}
	rs := make([]*ast.Term, len(roles))
	for i, r := range roles {
		rs[i] = ast.StringTerm(r)
	}
	return ast.NewObject(
		ast.Item(ast.StringTerm("attributes"), ast.ObjectTerm(
			ast.Item(ast.StringTerm("request"), ast.ObjectTerm(
				ast.Item(ast.StringTerm("http"), ast.ObjectTerm(
					ast.Item(ast.StringTerm("method"), ast.StringTerm(method)),
					ast.Item(ast.StringTerm("path"), ast.StringTerm(path)),
				)))))),
		ast.Item(ast.StringTerm("parsed_path"), ast.ArrayTerm(arr...)),
		ast.Item(ast.StringTerm("identity"), ast.ObjectTerm(
			ast.Item(ast.StringTerm("roles"), ast.ArrayTerm(rs...)))),
	)
}

func TestEmbeddedDecision(t *testing.T) {
	e, err := NewEngine(t.Context(), EngineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Revision()) != 16 {
		t.Fatalf("revision %q", e.Revision())
	}
	cases := []struct {
		method, path string
		roles        []string
		allowed      bool
		perm         string
	}{
		{"POST", "/v1/workflows/etl/executions", []string{"business_user"}, true, "workflow:execute"},
		{"POST", "/v1/workflows", []string{"data_scientist"}, true, "workflow:create"},
		{"POST", "/v1/workflows", []string{"business_user"}, false, ""},
		{"PUT", "/v1/workflows/etl", []string{"data_scientist"}, true, "workflow:create"},
		{"PUT", "/v1/workflows/etl", []string{"business_user"}, false, ""},
		{"DELETE", "/v1/workflows/etl", []string{"admin"}, true, "workflow:delete"},
		{"DELETE", "/v1/workflows/etl", []string{"data_scientist"}, false, ""},
		{"GET", "/v1/workflows/etl/executions/1", []string{"business_user"}, true, "workflow:read"},
		{"GET", "/v1/other", []string{"admin"}, false, ""},
		{"GET", "/v1/workflows", nil, false, ""},
	}
	for _, c := range cases {
		t.Run(c.method+c.path, func(t *testing.T) {
			v, err := e.Eval(t.Context(), input(t, c.method, c.path, c.roles...))
			if err != nil {
				t.Fatal(err)
			}
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("result %T %v", v, v)
			}
			if m["allowed"] != c.allowed {
				t.Fatalf("allowed = %v, want %v (%v)", m["allowed"], c.allowed, m)
			}
			if c.allowed {
				if h := m["headers"].(map[string]any)["x-kailash-permission"]; h != c.perm {
					t.Fatalf("permission header %v, want %s", h, c.perm)
				}
			} else if m["http_status"] == nil || m["body"] == nil {
				t.Fatalf("deny without status/body: %v", m)
			}
		})
	}
}

func write(t *testing.T, dir, name, body string) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestReloadKeepsLastGoodAndNamesFileRowCol(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	write(t, dir, "app/a.rego", "package app\nallow if input.x == data.app.want\n")
	write(t, dir, "app/data.json", `{"want": 1}`)
	e, err := NewEngine(ctx, EngineOptions{Dir: dir, Decision: "app/allow"})
	if err != nil {
		t.Fatal(err)
	}
	in := ast.MustParseTerm(`{"x": 1}`).Value
	if v, err := e.Eval(ctx, in); err != nil || v != true {
		t.Fatalf("Eval = %v, %v", v, err)
	}
	rev := e.Revision()

	// A syntax error and a compile (unsafe var) error are both reported with file:row:col.
	write(t, dir, "app/a.rego", "package app\nallow if {\n  input.x ==\n}\n")
	err = e.Reload(ctx)
	if err == nil || !regexp.MustCompile(`a\.rego:\d+:\d+: rego_parse_error`).MatchString(err.Error()) {
		t.Fatalf("Reload error %v does not name file:row:col", err)
	}
	write(t, dir, "app/a.rego", "package app\nallow if {\n  y == 1\n}\n")
	err = e.Reload(ctx)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "app", "a.rego")+":3:3: rego_unsafe_var_error") {
		t.Fatalf("Reload error %v does not name file:row:col", err)
	}
	if e.Revision() != rev {
		t.Fatal("revision changed after a failed reload")
	}
	if v, err := e.Eval(ctx, in); err != nil || v != true {
		t.Fatalf("old policy not serving after failed reload: %v, %v", v, err)
	}

	// A good change swaps in.
	write(t, dir, "app/a.rego", "package app\nallow if input.x == data.app.want\n")
	write(t, dir, "app/data.json", `{"want": 2}`)
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if e.Revision() == rev {
		t.Fatal("revision unchanged after reload")
	}
	if _, err := e.Eval(ctx, in); !errors.Is(err, ErrUndefined) {
		t.Fatalf("Eval after reload = %v, want ErrUndefined", err)
	}
}

func TestEvalErrors(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	write(t, dir, "p.rego", "package p\nx := input.v\nboom := 1 / input.z\nconflict := 1 if input.c\nconflict := 2 if input.c\n")
	e, err := NewEngine(ctx, EngineOptions{Dir: dir, Decision: "p/x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Eval(ctx, ast.NewObject()); !errors.Is(err, ErrUndefined) {
		t.Fatalf("undefined: %v", err)
	}
	e2, err := NewEngine(ctx, EngineOptions{Dir: dir, Decision: "p/conflict"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e2.Eval(ctx, ast.MustParseTerm(`{"c": true}`).Value); err == nil {
		t.Fatal("conflicting rule values: want an error")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.Eval(cctx, ast.MustParseTerm(`{"v": 1}`).Value); err == nil {
		t.Fatal("cancelled context: want an error")
	}
}

// TestEvalStopsAtDeadline: a deadline that passes during a long evaluation
// stops it (Eval cancels OPA through context.AfterFunc, not a goroutine).
func TestEvalStopsAtDeadline(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "p.rego", "package p\nslow if {\n\tsome i in numbers.range(1, 5000)\n\tsome j in numbers.range(1, 5000)\n\ti + j < 0\n}\n")
	e, err := NewEngine(t.Context(), EngineOptions{Dir: dir, Decision: "p/slow"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = e.Eval(ctx, ast.NewObject())
	if !errors.Is(err, context.DeadlineExceeded) && !topdown.IsCancel(err) {
		t.Fatalf("err = %v, want a cancellation", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("evaluation ran %s past a 50ms deadline", d)
	}
}

func TestNewEngineErrors(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	write(t, dir, "p.rego", "package p\nx := 1\n")
	for _, c := range []struct {
		name string
		opts EngineOptions
		want string
	}{
		{"missing dir", EngineOptions{Dir: filepath.Join(dir, "nope")}, "no such file"},
		{"data prefix", EngineOptions{Dir: dir, Decision: "data.p.x"}, "without a leading"},
		{"empty segment", EngineOptions{Dir: dir, Decision: "p//x"}, "empty path segment"},
		{"unknown decision", EngineOptions{Dir: dir, Decision: "p/y"}, "no rule or data defines it"},
		{"no modules", EngineOptions{Dir: t.TempDir()}, "no .rego modules"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := NewEngine(ctx, c.opts); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
}

func TestWatchReloads(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	dir := t.TempDir()
	write(t, dir, "p/p.rego", "package p\nx := 1\n")
	e, err := NewEngine(ctx, EngineOptions{Dir: dir, Decision: "p/x"})
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan error, 16)
	done := make(chan error, 1)
	go func() { done <- e.Watch(ctx, 20*time.Millisecond, func(err error) { results <- err }) }()
	time.Sleep(50 * time.Millisecond) // let the watcher register the tree

	write(t, dir, "p/p.rego", "package p\nx := \n")
	if err := waitReload(t, results); err == nil {
		t.Fatal("broken file: want a reload error")
	}
	write(t, dir, "p/p.rego", "package p\nx := 2\n")
	if err := waitReload(t, results); err != nil {
		t.Fatal(err)
	}
	v, err := e.Eval(ctx, ast.NewObject())
	if err != nil || v.(json.Number) != "2" {
		t.Fatalf("after hot reload: %v %v", v, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func waitReload(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("no reload within 5s")
		return nil
	}
}

// TestInterQueryCachesServeEvaluations checks that a prepared query
// evaluates with the engine's inter-query caches: the parsed key set
// (io_jwt_keys) and the verified token (io_jwt) are cached after the first
// evaluation, and a cached token's claims are still checked on every call.
func TestInterQueryCachesServeEvaluations(t *testing.T) {
	const jwks = `{"keys":[{"kty":"oct","kid":"k1","alg":"HS256","k":"c2VjcmV0LWtleS1mb3ItdGhlLXRlc3Qtb2YtaW8tand0"}]}`
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	signing := b64(`{"alg":"HS256","typ":"JWT","kid":"k1"}`) + "." + b64(`{"sub":"alice","exp":2000000000}`)
	mac := hmac.New(sha256.New, []byte("secret-key-for-the-test-of-io-jwt"))
	mac.Write([]byte(signing))
	token := signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))

	dir := t.TempDir()
	write(t, dir, "p.rego", "package p\n\njwks := `"+jwks+"`\n\n"+`allow if {
	[valid, _, payload] := io.jwt.decode_verify(input.token, {"cert": jwks, "time": input.now})
	valid
	payload.sub == "alice"
}
`)
	e, err := NewEngine(t.Context(), EngineOptions{Dir: dir, Decision: "p/allow"})
	if err != nil {
		t.Fatal(err)
	}
	eval := func(now int64) error {
		in := ast.NewObject(ast.Item(ast.StringTerm("token"), ast.StringTerm(token)),
			ast.Item(ast.StringTerm("now"), ast.IntNumberTerm(int(now))))
		_, err := e.Eval(t.Context(), in)
		return err
	}
	valid := int64(1900000000) * int64(time.Second)
	if err := eval(valid); err != nil {
		t.Fatal(err)
	}
	if keys := e.iqvCache.GetCache("io_jwt_keys"); keys == nil {
		t.Fatal("io_jwt_keys cache is off")
	} else if _, ok := keys.Get(ast.String(jwks)); !ok {
		t.Fatal("the key set was not cached")
	}
	tokens := e.iqvCache.GetCache("io_jwt")
	if tokens == nil {
		t.Fatal("io_jwt cache is off")
	}
	key := ast.NewArray(ast.StringTerm(token), ast.ObjectTerm(ast.Item(ast.StringTerm("cert"), ast.StringTerm(jwks))))
	if _, ok := tokens.Get(key); !ok {
		t.Fatal("the verified token was not cached")
	}
	if err := eval(valid); err != nil {
		t.Fatal("cached token:", err)
	}
	// Expired by then: the cached signature does not make it valid.
	if err := eval(int64(2100000000) * int64(time.Second)); !errors.Is(err, ErrUndefined) {
		t.Fatalf("expired cached token: err = %v, want undefined", err)
	}
}
