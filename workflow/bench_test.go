package workflow

import (
	"context"
	"testing"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/workflow/store"
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

// BenchmarkSQLNodeSQLite and BenchmarkSQLNodePostgres are one sql node
// (a parameterized read of the tenant's own table) without the API.
func BenchmarkSQLNodeSQLite(b *testing.B) {
	st, err := store.OpenStore(context.Background(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	benchSQLNode(b, st)
}

func BenchmarkSQLNodePostgres(b *testing.B) {
	st, err := store.OpenPostgresStore(context.Background(), testenv.StartPostgres(b).DSN)
	if err != nil {
		b.Fatal(err)
	}
	benchSQLNode(b, st)
}

func benchSQLNode(b *testing.B, st store.Store) {
	b.Cleanup(func() { st.Close() })
	ctx := context.Background()
	if _, err := st.TenantQuery(ctx, "acme", store.TenantQuery{SQL: `CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)`, MaxRows: 1}); err != nil {
		b.Fatal(err)
	}
	if _, err := st.TenantQuery(ctx, "acme", store.TenantQuery{SQL: `INSERT INTO kv VALUES ($1, $2)`, Args: []any{"a", "1"}, MaxRows: 1}); err != nil {
		b.Fatal(err)
	}
	w, err := Compile(Definition{Name: "kv", Nodes: []Node{{ID: "q", Type: "sql", Config: map[string]any{"query": "SELECT v FROM kv WHERE k = $1", "params": []any{"k"}}}}})
	if err != nil {
		b.Fatal(err)
	}
	x := NewExecutor(ExecutorOptions{Store: st, Limits: config.RunnerLimits{MaxConcurrentExecutions: 1 << 20}})
	in := map[string]any{"k": "a"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := x.Run(ctx, w, in, acme, RunOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
