package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/workflow"
	"github.com/open-policy-agent/opa/v1/ast"
)

func newTestServer(t *testing.T, wfs map[string]*workflow.Workflow) *Server {
	t.Helper()
	return newTestServerCfg(t, wfs, config.Runner{HTTP: "127.0.0.1:0"})
}

func newTestServerCfg(t *testing.T, wfs map[string]*workflow.Workflow, r config.Runner) *Server {
	t.Helper()
	if r.HTTP == "" {
		r.HTTP = "127.0.0.1:0"
	}
	s, err := New(&config.Config{Runner: r}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.ln.Close(); s.shutdown() })
	if wfs != nil {
		s.workflows.Store(&wfs)
	}
	return s
}

// The helpers below are the workflow package's test helpers, for the
// server's tests (test files are not shared across packages).

var acme = workflow.Caller{Tenant: "acme", User: "alice", Roles: []string{"admin"}}

// upstream is a test HTTP server the http node may call; its handler gets
// the request and decides when to answer.
func upstream(t *testing.T, h http.HandlerFunc) (host string) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u.Host
}

func httpNode(id, host, path string) workflow.Node {
	return workflow.Node{ID: id, Type: "http", Config: map[string]any{"url": "http://" + host + path}}
}

func mustCompile(t *testing.T, d workflow.Definition) *workflow.Workflow {
	t.Helper()
	w, err := workflow.Compile(d)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func hang(t *testing.T) string {
	return upstream(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
}

func code(src string) workflow.Node {
	return workflow.Node{ID: "script", Type: "code", Config: map[string]any{"code": src}}
}

type policyFunc func(ctx context.Context, input ast.Value) (any, error)

func (f policyFunc) Eval(ctx context.Context, input ast.Value) (any, error) { return f(ctx, input) }

func permissionWorkflow(t *testing.T, extra map[string]any) *workflow.Workflow {
	cfg := map[string]any{"permission": "data:read", "resource": "reports"}
	for k, v := range extra {
		cfg[k] = v
	}
	return mustCompile(t, workflow.Definition{Name: "pc", Nodes: []workflow.Node{{ID: "check", Type: "permission_check", Config: cfg}, {ID: "after", Type: "identity"}},
		Connections: []workflow.Connection{{From: "check", To: "after"}}})
}
