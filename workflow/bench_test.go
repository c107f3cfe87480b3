package workflow

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kailash-gw/kailash/internal/config"
)

// BenchmarkExecuteTrivial3Node is the executor's overhead on a 3-node chain
// of cheap nodes (target < 200µs), without storage or HTTP.
func BenchmarkExecuteTrivial3Node(b *testing.B) {
	w, err := Compile(Definition{Name: "trivial", Nodes: []Node{
		{ID: "a", Type: "transform", Config: map[string]any{"set": map[string]any{"greeting": "hello"}}},
		{ID: "b", Type: "identity"},
		{ID: "c", Type: "transform", Config: map[string]any{"remove": []any{"x"}}},
	}, Connections: []Connection{{From: "a", To: "b"}, {From: "b", To: "c"}}})
	if err != nil {
		b.Fatal(err)
	}
	x := NewExecutor(ExecutorOptions{Limits: config.RunnerLimits{MaxConcurrentExecutions: 1 << 20}})
	in := map[string]any{"x": 1.0, "order": 42.0}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := x.Run(ctx, w, in, acme, RunOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExecuteCodeNode is one Starlark node (the seed's script).
func BenchmarkExecuteCodeNode(b *testing.B) {
	w, err := Compile(Definition{Name: "code", Nodes: []Node{{ID: "c", Type: "code", Config: map[string]any{"code": "result = parameters.get('data', {})"}}}})
	if err != nil {
		b.Fatal(err)
	}
	x := NewExecutor(ExecutorOptions{})
	in := map[string]any{"data": map[string]any{"a": 1.0}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := x.Run(context.Background(), w, in, acme, RunOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHTTPExecuteSQLite is a whole synchronous execution through the
// API handler with the execution and node results written to SQLite.
func BenchmarkHTTPExecuteSQLite(b *testing.B) {
	wfs, err := LoadDir("../examples/workflows")
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(&config.Config{Runner: config.Runner{HTTP: "127.0.0.1:0", DataDir: b.TempDir(), Limits: config.RunnerLimits{MaxConcurrentExecutions: 1 << 20}}}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.ln.Close(); s.shutdown() })
	s.workflows.Store(&wfs)
	h := s.Handler()
	b.ReportAllocs()
	for b.Loop() {
		rec := newRecorder()
		h.ServeHTTP(rec, newExecRequest())
		if rec.Code != 200 {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }

func newExecRequest() *http.Request {
	r := httptest.NewRequest("POST", "/v1/workflows/hello/executions", strings.NewReader(`{"order":42}`))
	r.Header.Set("x-kailash-tenant", "acme")
	r.Header.Set("x-kailash-user", "alice")
	return r
}
