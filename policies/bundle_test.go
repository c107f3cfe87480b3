package policies

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

func rsaKeys(t *testing.T) (priv, pub string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pb}))
}

// appBundle writes a one-rule bundle: data.app.v is want.
func appBundle(t *testing.T, want int) string {
	t.Helper()
	dir := t.TempDir()
	write(t, dir, "app/a.rego", "package app\nv := data.app.want\nw := data.app.want\npair := [v, w]\n")
	write(t, dir, "app/data.json", fmt.Sprintf(`{"want": %d}`, want))
	write(t, dir, "app/a_test.rego", "package app\ntest_v if v == data.app.want\n")
	return dir
}

func buildTo(t *testing.T, dir string, opts BuildOptions) string {
	t.Helper()
	b, err := Build(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func evalNum(t *testing.T, e *Engine) string {
	t.Helper()
	v, err := e.Eval(t.Context(), ast.NewObject())
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(v)
}

func TestTarballWithManifestRevision(t *testing.T) {
	p := buildTo(t, appBundle(t, 7), BuildOptions{Revision: "rev-42"})
	e, err := NewEngine(t.Context(), EngineOptions{Dir: p, Decision: "app/v"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Revision() != "rev-42" || evalNum(t, e) != "7" {
		t.Fatalf("revision %q value %s", e.Revision(), evalNum(t, e))
	}
	// Tests are left out of a built bundle.
	if _, err := NewEngine(t.Context(), EngineOptions{Dir: p, Decision: "app/test_v"}); err == nil {
		t.Fatal("test rule found in the built bundle")
	}
}

func TestManifestRootsEnforced(t *testing.T) {
	dir := appBundle(t, 1)
	write(t, dir, ".manifest", `{"revision": "r1", "roots": ["other"]}`)
	_, err := NewEngine(t.Context(), EngineOptions{Dir: dir, Decision: "app/v"})
	if err == nil || !strings.Contains(err.Error(), "do not permit") {
		t.Fatalf("err = %v", err)
	}
	write(t, dir, ".manifest", `{"revision": "r1", "roots": ["app"]}`)
	e, err := NewEngine(t.Context(), EngineOptions{Dir: dir, Decision: "app/v"})
	if err != nil || e.Revision() != "r1" {
		t.Fatalf("%v %v", e, err)
	}
}

func TestSignedBundle(t *testing.T) {
	priv, pub := rsaKeys(t)
	_, otherPub := rsaKeys(t)
	dir := appBundle(t, 3)
	signed := buildTo(t, dir, BuildOptions{Revision: "s1", SigningKey: priv, KeyID: "k1"})
	unsigned := buildTo(t, dir, BuildOptions{Revision: "u1"})
	ctx := t.Context()

	e, err := NewEngine(ctx, EngineOptions{Dir: signed, Decision: "app/v", Verify: &Verification{PublicKey: pub, KeyID: "k1"}})
	if err != nil {
		t.Fatal(err)
	}
	if evalNum(t, e) != "3" {
		t.Fatal("wrong value")
	}
	for name, c := range map[string]struct {
		path string
		v    *Verification
		want string
	}{
		"wrong key":       {signed, &Verification{PublicKey: otherPub, KeyID: "k1"}, "verification"},
		"unsigned":        {unsigned, &Verification{PublicKey: pub, KeyID: "k1"}, "missing .signatures.json"},
		"tampered bundle": {tamper(t, signed), &Verification{PublicKey: pub, KeyID: "k1"}, "digest mismatch"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewEngine(ctx, EngineOptions{Dir: c.path, Decision: "app/v", Verify: c.v})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
}

// tamper re-signs nothing: it takes the signature of signed and puts it in
// a bundle with different data.
func tamper(t *testing.T, signed string) string {
	t.Helper()
	// The same files as the signed bundle (a built bundle keeps its data
	// in /data.json), with different data and the original signature.
	d2 := t.TempDir()
	write(t, d2, "app/a.rego", "package app\nv := data.app.want\nw := data.app.want\npair := [v, w]\n")
	write(t, d2, "data.json", `{"app": {"want": 999}}`)
	write(t, d2, ".manifest", `{"revision": "s1", "roots": [""]}`)
	sig := extractSignatures(t, signed)
	write(t, d2, ".signatures.json", sig)
	p := filepath.Join(t.TempDir(), "tampered.tar.gz")
	// Build keeps no signature; write the directory as a tarball by hand.
	writeTarball(t, p, d2)
	return p
}

func TestReloadUnderConcurrentEval(t *testing.T) {
	ctx := t.Context()
	dir := appBundle(t, 0)
	e, err := NewEngine(ctx, EngineOptions{Dir: dir, Decision: "app/pair"})
	if err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var evals atomic.Int64
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				v, err := e.Eval(ctx, ast.NewObject())
				if err != nil {
					t.Error(err)
					return
				}
				pair := v.([]any)
				if pair[0] != pair[1] { // both from one version, never mixed
					t.Errorf("half-loaded policy: %v", pair)
					return
				}
				evals.Add(1)
			}
		})
	}
	for i := 1; i <= 20; i++ {
		write(t, dir, "app/data.json", fmt.Sprintf(`{"want": %d}`, i))
		if err := e.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		if i%5 == 0 { // a broken version in between never replaces a good one
			write(t, dir, "app/a.rego", "package app\nv := \n")
			if err := e.Reload(ctx); err == nil {
				t.Fatal("broken bundle accepted")
			}
			write(t, dir, "app/a.rego", "package app\nv := data.app.want\nw := data.app.want\npair := [v, w]\n")
		}
	}
	stop.Store(true)
	wg.Wait()
	if got := fmt.Sprint(e.Eval(ctx, ast.NewObject())); !strings.HasPrefix(got, "[20 20]") {
		t.Fatalf("final %s", got)
	}
	t.Logf("%d evaluations during 24 reloads", evals.Load())
}

// bundleServer serves a bundle tarball with an ETag; fail makes it answer 503.
type bundleServer struct {
	mu       sync.Mutex
	body     []byte
	etag     string
	fail     bool
	requests int
	notMod   int
}

func (s *bundleServer) set(b []byte, etag string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body, s.etag = b, etag
}

func (s *bundleServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	if s.fail {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	if r.Header.Get("If-None-Match") == s.etag {
		s.notMod++
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("ETag", s.etag)
	w.Write(s.body)
}

func TestBundleServerETagPersistAndOutage(t *testing.T) {
	ctx := t.Context()
	priv, pub := rsaKeys(t)
	verify := &Verification{PublicKey: pub}
	b1, err := Build(appBundle(t, 1), BuildOptions{Revision: "one", SigningKey: priv})
	if err != nil {
		t.Fatal(err)
	}
	srv := &bundleServer{}
	srv.set(b1, `"e1"`)
	hs := httptest.NewServer(srv)
	defer hs.Close()
	persistDir := t.TempDir()
	opts := EngineOptions{URL: hs.URL + "/bundles/app.tar.gz", PersistDir: persistDir, Decision: "app/v", Verify: verify, PollInterval: 20 * time.Millisecond}

	e, err := NewEngine(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if e.Revision() != "one" || evalNum(t, e) != "1" {
		t.Fatalf("rev %s", e.Revision())
	}
	if err := e.Reload(ctx); !errors.Is(err, ErrNotModified) {
		t.Fatalf("second poll: %v, want not modified", err)
	}

	// A bad bundle (unsigned) is refused; the good one keeps serving and
	// stays persisted.
	bad, _ := Build(appBundle(t, 666), BuildOptions{Revision: "evil"})
	srv.set(bad, `"e2"`)
	if err := e.Reload(ctx); err == nil || !strings.Contains(err.Error(), "signatures") {
		t.Fatalf("unsigned bundle: %v", err)
	}
	if e.Revision() != "one" {
		t.Fatal("unsigned bundle replaced the active one")
	}

	// The watcher picks up a new good bundle.
	b2, _ := Build(appBundle(t, 2), BuildOptions{Revision: "two", SigningKey: priv})
	srv.set(b2, `"e3"`)
	wctx, cancel := context.WithCancel(ctx)
	results := make(chan error, 16)
	done := make(chan error, 1)
	go func() { done <- e.Watch(wctx, 0, func(err error) { results <- err }) }()
	if err := waitReload(t, results); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	if e.Revision() != "two" {
		t.Fatalf("revision %s after poll", e.Revision())
	}

	// Server down: a restart still has the last good bundle, from disk.
	srv.mu.Lock()
	srv.fail = true
	srv.mu.Unlock()
	e2, err := NewEngine(ctx, opts)
	if err != nil {
		t.Fatalf("restart during outage: %v", err)
	}
	if e2.Revision() != "two" || evalNum(t, e2) != "2" {
		t.Fatalf("restart served revision %s", e2.Revision())
	}
	// Without a persisted copy the restart fails closed.
	if _, err := NewEngine(ctx, EngineOptions{URL: opts.URL, PersistDir: t.TempDir(), Decision: "app/v"}); err == nil {
		t.Fatal("no bundle at all: want an error")
	}
	// A corrupted persisted copy is refused, not served.
	os.WriteFile(filepath.Join(persistDir, persistFile), []byte("garbage"), 0o600)
	if _, err := NewEngine(ctx, opts); err == nil {
		t.Fatal("corrupt persisted bundle accepted")
	}
}

func TestAllowed(t *testing.T) {
	for _, c := range []struct {
		v    any
		want bool
		err  bool
	}{
		{true, true, false}, {false, false, false},
		{map[string]any{"allowed": true}, true, false},
		{map[string]any{"allowed": "yes"}, false, true},
		{"x", false, true}, {nil, false, true},
	} {
		got, err := Allowed(c.v)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("Allowed(%v) = %v, %v", c.v, got, err)
		}
	}
	_ = json.Number("1")
}

func TestSingleRegoFile(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "policy.rego", "package envoy.authz\ndefault allow := false\nallow if input.m == \"GET\"\n")
	write(t, dir, "other.rego", "package envoy.authz\nallow := 1\n") // not loaded: only the named file is
	e, err := NewEngine(t.Context(), EngineOptions{Dir: filepath.Join(dir, "policy.rego"), Decision: "envoy/authz/allow"})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := e.Eval(t.Context(), ast.MustParseTerm(`{"m": "GET"}`).Value); err != nil || v != true {
		t.Fatalf("%v %v", v, err)
	}
}
