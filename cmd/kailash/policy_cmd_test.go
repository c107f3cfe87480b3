package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, p, body string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPolicyTestCheckEval(t *testing.T) {
	out, err := runOut(t, "policy", "test", "--coverage", "--threshold", "90")
	if err != nil || !strings.Contains(out, "PASS: ") || !strings.Contains(out, "coverage") || !strings.Contains(out, "testing the bundle embedded in kailash (revision ") {
		t.Fatalf("%v\n%s", err, out)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.rego"), "package envoy.authz\ndefault allow := false\nallow if input.attributes.request.http.method == \"GET\"\n")
	writeFile(t, filepath.Join(dir, "p_test.rego"), "package envoy.authz\ntest_get if allow with input as {\"attributes\": {\"request\": {\"http\": {\"method\": \"GET\"}}}}\ntest_post_wrong if allow with input as {\"attributes\": {\"request\": {\"http\": {\"method\": \"POST\"}}}}\n")
	if out, err := runOut(t, "policy", "test", "--bundle", dir); err == nil || !strings.Contains(out, "data.envoy.authz.test_post_wrong: FAIL") {
		t.Fatalf("failing test not reported: %v\n%s", err, out)
	}
	if out, err := runOut(t, "policy", "check", "--bundle", dir, "--decision", "envoy/authz/allow"); err != nil || !strings.Contains(out, "ok:") {
		t.Fatalf("check: %v %s", err, out)
	}
	bad := t.TempDir()
	writeFile(t, filepath.Join(bad, "p.rego"), "package x\nallow if {\n  y == 1\n}\n")
	if _, err := runOut(t, "policy", "check", "--bundle", bad); err == nil || !strings.Contains(err.Error(), filepath.Join(bad, "p.rego")+":3:3: rego_unsafe_var_error") {
		t.Fatalf("check error does not name file:row:col: %v", err)
	}
	in := writeFile(t, filepath.Join(t.TempDir(), "in.json"), `{"attributes": {"request": {"http": {"method": "GET"}}}}`)
	out, err = runOut(t, "policy", "eval", "--bundle", dir, "--decision", "envoy/authz/allow", "--input", in, "--explain", "full")
	if err != nil || !strings.Contains(out, "result: ALLOW") || !strings.Contains(out, "allow = true") || !strings.Contains(out, "trace") {
		t.Fatalf("eval: %v\n%s", err, out)
	}
	// A CheckRequest as input, built as drop-in mode builds it.
	cr := writeFile(t, filepath.Join(t.TempDir(), "cr.json"), `{"attributes": {"request": {"http": {"method": "POST", "path": "/a"}}}}`)
	out, err = runOut(t, "policy", "eval", "--bundle", dir, "--decision", "envoy/authz/allow", "--input", cr, "--check-request")
	if err != nil || !strings.Contains(out, "result: DENY") {
		t.Fatalf("eval check request: %v\n%s", err, out)
	}
}

func TestPolicyBuildSignedAndServeIt(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	key := writeFile(t, filepath.Join(dir, "key.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})))
	pb, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	pub := writeFile(t, filepath.Join(dir, "pub.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pb})))
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "envoy/authz/p.rego"), "package envoy.authz\ndefault allow := false\n")
	out := filepath.Join(dir, "b.tar.gz")
	if o, err := runOut(t, "policy", "build", "--bundle", src, "-o", out, "--revision", "v7", "--signing-key", key); err != nil || !strings.Contains(o, "signed") {
		t.Fatalf("build: %v %s", err, o)
	}
	if o, err := runOut(t, "policy", "check", "--bundle", out); err != nil || !strings.Contains(o, "checked "+out+" (revision v7)") {
		t.Fatalf("check tarball: %v %s", err, o)
	}
	// The drop-in server refuses to start with a wrong verification key.
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	ob, _ := x509.MarshalPKIXPublicKey(&other.PublicKey)
	wrong := writeFile(t, filepath.Join(dir, "wrong.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ob})))
	if _, err := runOut(t, "authz", "--policy", out, "--verification-key", wrong, "--grpc-addr", "127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "verif") {
		t.Fatalf("wrong key: %v", err)
	}
	_ = pub
}

func TestPolicyReplay(t *testing.T) {
	candidate := t.TempDir()
	writeFile(t, filepath.Join(candidate, "p.rego"), "package envoy.authz\ndefault allow := false\nallow if input.attributes.request.http.method in {\"GET\", \"HEAD\"}\n")
	var lines []string
	for i, c := range []struct{ tenant, method, path string }{
		{"acme", "GET", "/a?x=1"}, {"acme", "HEAD", "/a"}, {"acme", "HEAD", "/a?y=2"}, {"globex", "HEAD", "/b"}, {"acme", "POST", "/a"},
	} {
		ev := map[string]any{"decision_id": string(rune('a' + i)), "path": "envoy/authz/allow", "tenant": c.tenant, "outcome": "deny",
			"result": c.method == "GET", "request_path": c.path,
			"input": map[string]any{"attributes": map[string]any{"request": map[string]any{"http": map[string]any{"method": c.method, "path": c.path}}}}}
		b, _ := json.Marshal(ev)
		lines = append(lines, string(b))
	}
	lines = append(lines, `{"decision_id":"z","outcome":"unauthenticated"}`)
	log := writeFile(t, filepath.Join(t.TempDir(), "decisions.jsonl"), strings.Join(lines, "\n")+"\n")
	out, err := runOut(t, "policy", "replay", "--log", log, "--bundle", candidate)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"5 decisions replayed, 3 would change", "1 skipped", "tenant acme  /a: 2 changed (2 now allowed", "tenant globex  /b: 1 changed", "decision b: deny -> allow"} {
		if !strings.Contains(out, want) {
			t.Errorf("replay output lacks %q:\n%s", want, out)
		}
	}
}

func TestAuthzDropInFlags(t *testing.T) {
	if _, err := runOut(t, "authz", "--policy", "/nonexistent", "--grpc-addr", "127.0.0.1:0"); err == nil {
		t.Fatal("missing policy: want an error")
	}
	if _, err := runOut(t, "authz", "--policy", ".", "--bundle-url", "http://x", "--grpc-addr", "127.0.0.1:0"); err == nil {
		t.Fatal("both sources: want an error")
	}
}

// The example opa-envoy-plugin policy's own tests pass.
func TestExamplePolicyTests(t *testing.T) {
	if out, err := runOut(t, "policy", "test", "--bundle", "../../examples/policies/envoy-authz"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}
