package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/internal/wire"
	"github.com/kailash-gw/kailash/workflow"
	"github.com/kailash-gw/kailash/workflow/store"
)

type signer struct{ key jwk.Key }

// newSigner writes a one-key JWKS to a file and returns a signer for it.
func newSigner(t *testing.T, dir string) (*signer, string) {
	t.Helper()
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := jwk.FromRaw(raw)
	_ = k.Set(jwk.KeyIDKey, "k1")
	_ = k.Set(jwk.AlgorithmKey, jwa.ES256)
	pub, _ := k.PublicKey()
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	b, _ := json.Marshal(set)
	p := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return &signer{key: k}, p
}

func (s *signer) token(t *testing.T, aud, tenant, sub string, roles []string, exp time.Duration) string {
	t.Helper()
	b := jwt.NewBuilder().Audience([]string{aud}).Subject(sub).Expiration(time.Now().Add(exp)).IssuedAt(time.Now())
	if tenant != "" {
		b = b.Claim("tenant", tenant)
	}
	b = b.Claim("roles", roles)
	tok, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, s.key))
	if err != nil {
		t.Fatal(err)
	}
	return string(signed)
}

type apiClient struct {
	t   *testing.T
	h   http.Handler
	hdr map[string]string
}

func (c apiClient) do(method, path, body string) (int, map[string]any) {
	c.t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for k, v := range c.hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	c.h.ServeHTTP(rec, req)
	var m map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &m)
	return rec.Code, m
}

func TestIdentityTokenVerified(t *testing.T) {
	dir := t.TempDir()
	sg, jwks := newSigner(t, dir)
	other, _ := newSigner(t, t.TempDir())
	wfs, err := workflow.LoadDir("../../examples/workflows")
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServerCfg(t, wfs, config.Runner{IdentityJWKS: jwks, IdentityAudience: "kailash-runner"})
	post := func(hdr map[string]string) (int, map[string]any) {
		return apiClient{t, s.Handler(), hdr}.do("POST", "/v1/workflows/hello/executions", `{"order":42}`)
	}
	good := sg.token(t, "kailash-runner", "acme", "alice", []string{"admin"}, time.Minute)
	code, body := post(map[string]string{wire.HeaderIdentity: good, "x-kailash-tenant": "globex", "x-kailash-user": "mallory"})
	if code != 200 || body["tenant"] != "acme" || body["user"] != "alice" || body["output"].(map[string]any)["order"] != 42.0 {
		t.Fatalf("valid token: %d %v", code, body)
	}
	for name, hdr := range map[string]map[string]string{
		"headers only": {"x-kailash-tenant": "acme", "x-kailash-user": "alice", "x-kailash-roles": "admin"},
		"wrong key":    {wire.HeaderIdentity: other.token(t, "kailash-runner", "acme", "alice", nil, time.Minute)},
		"wrong aud":    {wire.HeaderIdentity: sg.token(t, "someone-else", "acme", "alice", nil, time.Minute)},
		"expired":      {wire.HeaderIdentity: sg.token(t, "kailash-runner", "acme", "alice", nil, -time.Hour)},
		"no tenant":    {wire.HeaderIdentity: sg.token(t, "kailash-runner", "", "alice", nil, time.Minute)},
		"garbage":      {wire.HeaderIdentity: "not.a.jwt"},
		"tampered":     {wire.HeaderIdentity: good[:len(good)-4] + "AAAA"},
	} {
		if code, body := post(hdr); code != http.StatusUnauthorized {
			t.Errorf("%s: got %d %v, want 401", name, code, body)
		}
	}
}

func TestAPIWorkflowsAndExecutions(t *testing.T) {
	dir := t.TempDir()
	host := hang(t)
	s := newTestServerCfg(t, nil, config.Runner{DataDir: dir, HTTPAllow: []string{host},
		Limits: config.RunnerLimits{MaxWorkflows: 3}})
	acmeC := apiClient{t, s.Handler(), map[string]string{"x-kailash-tenant": "acme", "x-kailash-user": "alice", "x-kailash-roles": "admin"}}
	globexC := apiClient{t, s.Handler(), map[string]string{"x-kailash-tenant": "globex", "x-kailash-user": "bob"}}

	def := `{"name":"sum","nodes":[{"id":"calc","type":"code","config":{"code":"t = 0\nfor x in parameters['xs']:\n  t += x\nresult = t"}},{"id":"audit","type":"audit_log","config":{"action":"sum.done"}}],"connections":[{"from":"calc","to":"audit"}]}`
	if code, body := acmeC.do("POST", "/v1/workflows", def); code != 201 {
		t.Fatalf("create: %d %v", code, body)
	}
	if code, _ := acmeC.do("POST", "/v1/workflows", def); code != 409 {
		t.Fatalf("duplicate create: %d", code)
	}
	if code, body := acmeC.do("POST", "/v1/workflows", `{"name":"bad","nodes":[{"id":"a","type":"nope"}]}`); code != 422 || !strings.Contains(body["message"].(string), `node "a": unknown type`) {
		t.Fatalf("invalid create: %d %v", code, body)
	}
	yaml := "name: slow\nnodes:\n  - id: wait\n    type: http\n    config: {url: 'http://" + host + "/'}\n"
	if code, body := acmeC.do("POST", "/v1/workflows", yaml); code != 201 {
		t.Fatalf("yaml create: %d %v", code, body)
	}
	if code, _ := globexC.do("GET", "/v1/workflows/sum", ""); code != 404 {
		t.Fatalf("another tenant sees acme's workflow: %d", code)
	}

	code, body := acmeC.do("POST", "/v1/workflows/sum/executions", `{"xs":[1,2,3]}`)
	if code != 200 || body["output"].(map[string]any)["result"] != 6.0 {
		t.Fatalf("execute: %d %v", code, body)
	}
	id := body["execution_id"].(string)
	code, body = acmeC.do("GET", "/v1/workflows/sum/executions/"+id, "")
	if code != 200 || body["status"] != "completed" || len(body["nodes"].([]any)) != 2 {
		t.Fatalf("get execution: %d %v", code, body)
	}
	if code, _ := globexC.do("GET", "/v1/workflows/sum/executions/"+id, ""); code != 404 {
		t.Fatalf("another tenant reads acme's execution: %d", code)
	}

	// Async, then cancel.
	code, body = acmeC.do("POST", "/v1/workflows/slow/executions?async=true", `{}`)
	if code != 202 {
		t.Fatalf("async: %d %v", code, body)
	}
	slow := body["execution_id"].(string)
	if code, _ := globexC.do("POST", "/v1/workflows/slow/executions/"+slow+"/cancel", ""); code != 404 {
		t.Fatalf("another tenant cancels acme's execution: %d", code)
	}
	if code, body := acmeC.do("POST", "/v1/workflows/slow/executions/"+slow+"/cancel", ""); code != 202 {
		t.Fatalf("cancel: %d %v", code, body)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		_, body := acmeC.do("GET", "/v1/workflows/slow/executions/"+slow, "")
		if body["status"] != "cancelled" {
			return errorf("status %v", body["status"])
		}
		return nil
	})
	// Sync with a short timeout.
	if code, body := acmeC.do("POST", "/v1/workflows/slow/executions?timeout=100ms", `{}`); code != 504 || body["status"] != "timed_out" {
		t.Fatalf("timeout: %d %v", code, body)
	}
	// max_workflows: 3.
	acmeC.do("POST", "/v1/workflows", strings.Replace(def, `"sum"`, `"sum2"`, 1))
	if code, body := acmeC.do("POST", "/v1/workflows", strings.Replace(def, `"sum"`, `"sum3"`, 1)); code != 403 || body["limit"] != "max_workflows" {
		t.Fatalf("max_workflows: %d %v", code, body)
	}
	if code, _ := acmeC.do("DELETE", "/v1/workflows/sum2", ""); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	if code, _ := acmeC.do("DELETE", "/v1/workflows/sum2", ""); code != 404 {
		t.Fatalf("delete again: %d", code)
	}
	if _, err := os.Stat(filepath.Join(dir, "acme.db")); err != nil {
		t.Fatalf("no per-tenant database: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "globex.db")); err != nil {
		t.Fatalf("no per-tenant database: %v", err)
	}
}

func errorf(f string, a ...any) error { return &testErr{msg: strings.TrimSpace(fmt.Sprintf(f, a...))} }

type testErr struct{ msg string }

func (e *testErr) Error() string { return e.msg }

func TestInterruptedOnRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	st, err := store.OpenStore(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.StartExecution(ctx, &store.ExecutionRecord{ID: "e1", Workflow: "w", Tenant: "acme", User: "u", CreatedAt: store.Now()}); err != nil {
		t.Fatal(err)
	}
	st.Close() // as if the process died mid-execution
	st, err = store.OpenStore(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e, err := st.GetExecution(ctx, "acme", "e1")
	if err != nil || e.Status != store.StatusInterrupted {
		t.Fatalf("after restart: %v %+v", err, e)
	}
	if _, err := st.GetWorkflow(ctx, "../etc", "w"); err == nil {
		t.Fatal("a tenant id escaped the data directory")
	}
}

func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	s := newTestServer(t, nil)
	req := httptest.NewRequest("GET", "/openapi.json", nil)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil || doc.OpenAPI == "" {
		t.Fatalf("openapi: %v", err)
	}
	for _, r := range []string{"GET /v1/workflows", "POST /v1/workflows", "GET /v1/workflows/{name}", "PUT /v1/workflows/{name}", "DELETE /v1/workflows/{name}",
		"POST /v1/workflows/{name}/executions", "GET /v1/workflows/{name}/executions", "GET /v1/workflows/{name}/executions/{id}",
		"POST /v1/workflows/{name}/executions/{id}/cancel", "GET /v1/workflows/{name}/events", "GET /v1/events"} {
		m, p, _ := strings.Cut(r, " ")
		if doc.Paths[p][strings.ToLower(m)] == nil {
			t.Errorf("openapi.json lacks %s", r)
		}
	}
}

func TestIdentityTokenCarriesClearance(t *testing.T) {
	sg, jwks := newSigner(t, t.TempDir())
	v, err := newVerifier(jwks, "kailash-runner")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.NewBuilder().Audience([]string{"kailash-runner"}).Subject("alice").Expiration(time.Now().Add(time.Minute)).
		Claim("tenant", "acme").Claim("roles", []string{"admin"}).Claim("attributes", map[string]any{"clearance": "secret", "department": "eng"}).Build()
	if err != nil {
		t.Fatal(err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, sg.key))
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.verify(t.Context(), string(signed))
	if err != nil {
		t.Fatal(err)
	}
	if c.Clearance != "secret" || c.User != "alice" {
		t.Fatalf("caller %+v", c)
	}
}
