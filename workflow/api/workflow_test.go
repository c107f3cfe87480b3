package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kailash-gw/kailash/workflow"
)

func TestExecuteRequiresGatewayIdentity(t *testing.T) {
	wfs, err := workflow.LoadDir("../../examples/workflows")
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, wfs)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/v1/workflows/hello/executions", strings.NewReader(`{}`))
	req.Header.Set("x-kailash-tenant", "acme") // a user without a tenant is not an identity
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("no identity: got %d, want 401", rec.Code)
	}
}

func TestExecuteOverHTTP(t *testing.T) {
	wfs, err := workflow.LoadDir("../../examples/workflows")
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, wfs)
	req := httptest.NewRequest("POST", "/v1/workflows/hello/executions", strings.NewReader(`{"order":42}`))
	req.Header.Set("x-kailash-tenant", "acme")
	req.Header.Set("x-kailash-user", "alice")
	req.Header.Set("x-kailash-roles", "admin,auditor")
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("got %d: %s", rec.Code, rec.Body)
	}
	var body struct {
		Tenant, User string
		Output       map[string]any
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if body.Tenant != "acme" || body.User != "alice" || body.Output["order"] != 42.0 {
		t.Fatalf("unexpected body %s", rec.Body)
	}
	rec = httptest.NewRecorder()
	req = httptest.NewRequest("POST", "/v1/workflows/nope/executions", nil)
	req.Header.Set("x-kailash-tenant", "acme")
	req.Header.Set("x-kailash-user", "alice")
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != 404 {
		t.Fatalf("unknown workflow: got %d", rec.Code)
	}
}
