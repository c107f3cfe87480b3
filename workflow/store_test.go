package workflow

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// The same suite runs on both stores.

func TestStoreSQLite(t *testing.T) {
	dir := t.TempDir()
	storeSuite(t, func(t *testing.T) Store {
		st, err := OpenStore(t.Context(), dir)
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}

func TestStorePostgres(t *testing.T) {
	pg := testenv.StartPostgres(t)
	storeSuite(t, func(t *testing.T) Store {
		st, err := OpenPostgresStore(t.Context(), pg.DSN)
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}

func TestPostgresDSNNeverInErrors(t *testing.T) {
	_, err := OpenPostgresStore(t.Context(), "postgres://u:s3cret@[bad")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error %v", err)
	}
}

// storeSuite exercises a store; open opens it again on the same backend
// (a restart).
func storeSuite(t *testing.T, open func(t *testing.T) Store) {
	ctx := context.Background()
	st := open(t)
	t.Cleanup(func() { st.Close() })
	def := Definition{Name: "w1", Nodes: []Node{{ID: "a", Type: "identity"}}}

	t.Run("workflows", func(t *testing.T) {
		if err := st.PutWorkflow(ctx, "acme", "alice", def, 10); err != nil {
			t.Fatal(err)
		}
		if err := st.PutWorkflow(ctx, "acme", "alice", def, 10); !errors.Is(err, errExists) {
			t.Fatalf("duplicate: %v", err)
		}
		sw, err := st.GetWorkflow(ctx, "acme", "w1")
		if err != nil || sw.Definition.Name != "w1" || sw.CreatedBy != "alice" || sw.Digest == "" {
			t.Fatalf("get: %v %+v", err, sw)
		}
		if _, err := st.GetWorkflow(ctx, "globex", "w1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("another tenant reads acme's workflow: %v", err)
		}
		names, err := st.ListWorkflows(ctx, "acme")
		if err != nil || strings.Join(names, ",") != "w1" {
			t.Fatalf("list: %v %v", err, names)
		}
		if err := st.DeleteWorkflow(ctx, "acme", "w1"); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteWorkflow(ctx, "acme", "w1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("delete twice: %v", err)
		}
		if _, err := st.GetWorkflow(ctx, "../etc", "w"); err == nil {
			t.Fatal("a tenant id escaped its database")
		}
	})

	t.Run("max_workflows holds under concurrency", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := range 20 {
			wg.Go(func() {
				d := def
				d.Name = fmt.Sprintf("c%d", i)
				errs <- st.PutWorkflow(ctx, "initech", "u", d, 5)
			})
		}
		wg.Wait()
		close(errs)
		ok, limited := 0, 0
		for err := range errs {
			var le *LimitError
			switch {
			case err == nil:
				ok++
			case errors.As(err, &le) && le.Limit == "max_workflows":
				limited++
			default:
				t.Errorf("unexpected: %v", err)
			}
		}
		if ok != 5 || limited != 15 {
			t.Fatalf("created %d, limited %d; want 5 and 15", ok, limited)
		}
	})

	t.Run("executions", func(t *testing.T) {
		e := &ExecutionRecord{ID: "e1", Workflow: "w1", Tenant: "acme", User: "alice", Input: map[string]any{"x": 1.0}, CreatedAt: now()}
		if err := st.StartExecution(ctx, e); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		for _, n := range []string{"a", "b"} {
			if err := st.RecordNode(ctx, "acme", "e1", NodeRun{Node: n, Type: "identity", Status: "completed", Output: map[string]any{"n": n}, Started: t0, Finished: t0}); err != nil {
				t.Fatal(err)
			}
		}
		// Recording a node again replaces it.
		if err := st.RecordNode(ctx, "acme", "e1", NodeRun{Node: "b", Type: "identity", Status: "failed", Error: "boom", Started: t0, Finished: t0}); err != nil {
			t.Fatal(err)
		}
		if err := st.FinishExecution(ctx, "acme", "e1", StatusCompleted, map[string]any{"ok": true}, ""); err != nil {
			t.Fatal(err)
		}
		// The first outcome stays.
		if err := st.FinishExecution(ctx, "acme", "e1", StatusCancelled, nil, "late"); err != nil {
			t.Fatal(err)
		}
		got, err := st.GetExecution(ctx, "acme", "e1")
		if err != nil || got.Status != StatusCompleted || got.Output["ok"] != true || got.Input["x"] != 1.0 || len(got.Nodes) != 2 || got.Nodes[1].Error != "boom" {
			t.Fatalf("get: %v %+v", err, got)
		}
		if _, err := st.GetExecution(ctx, "globex", "e1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("another tenant reads acme's execution: %v", err)
		}
		list, err := st.ListExecutions(ctx, "acme", "w1", 10)
		if err != nil || len(list) != 1 || list[0].ID != "e1" {
			t.Fatalf("list: %v %+v", err, list)
		}
		if err := st.Audit(ctx, AuditRecord{ID: "a1", At: time.Now(), Tenant: "acme", User: "alice", Workflow: "w1", Execution: "e1", Node: "n", Action: "x", Details: map[string]any{"k": "v"}}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("interrupted on restart", func(t *testing.T) {
		if err := st.StartExecution(ctx, &ExecutionRecord{ID: "e2", Workflow: "w1", Tenant: "acme", User: "u", CreatedAt: now()}); err != nil {
			t.Fatal(err)
		}
		st2 := open(t) // a new process finds e2 running
		defer st2.Close()
		e, err := st2.GetExecution(ctx, "acme", "e2")
		if err != nil || e.Status != StatusInterrupted || e.FinishedAt == "" {
			t.Fatalf("after restart: %v %+v", err, e)
		}
		if e, _ := st2.GetExecution(ctx, "acme", "e1"); e.Status != StatusCompleted {
			t.Fatalf("a finished execution changed: %+v", e)
		}
	})

	t.Run("tenant data", func(t *testing.T) {
		rw := func(tenant, q string, args ...any) (*QueryResult, error) {
			return st.TenantQuery(ctx, tenant, TenantQuery{SQL: q, Args: args, MaxRows: 100})
		}
		ro := func(tenant, q string, args ...any) (*QueryResult, error) {
			return st.TenantQuery(ctx, tenant, TenantQuery{SQL: q, Args: args, ReadOnly: true, MaxRows: 100})
		}
		must := func(_ *QueryResult, err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(rw("acme", `CREATE TABLE items (name TEXT, qty INTEGER)`))
		must(rw("acme", `INSERT INTO items (name, qty) VALUES ($1, $2)`, "apple", int64(3)))
		must(rw("acme", `INSERT INTO items (name, qty) VALUES ($1, $2)`, "pear", int64(5)))
		must(rw("globex", `CREATE TABLE secrets (v TEXT)`))
		must(rw("globex", `INSERT INTO secrets (v) VALUES ($1)`, "globex-only"))
		res, err := ro("acme", `SELECT name, qty FROM items WHERE qty > $1 ORDER BY name`, int64(1))
		if err != nil || len(res.Rows) != 2 || res.Rows[0]["name"] != "apple" || res.Rows[0]["qty"] != 3.0 {
			t.Fatalf("select: %v %+v", err, res)
		}
		if res, err := st.TenantQuery(ctx, "acme", TenantQuery{SQL: `SELECT name FROM items`, ReadOnly: true, MaxRows: 1}); err != nil || !res.Truncated || len(res.Rows) != 1 {
			t.Fatalf("max rows: %v %+v", err, res)
		}
		if _, err := ro("acme", `INSERT INTO items (name, qty) VALUES ('x', 1)`); err == nil {
			t.Fatal("a read-only query wrote")
		}
		if _, err := ro("acme", `DELETE FROM items`); err == nil {
			t.Fatal("a read-only query deleted")
		}
		// Tenant isolation: acme cannot reach globex's table, the runner's
		// tables, or another database, whatever it writes.
		for _, q := range []string{
			`SELECT v FROM secrets`,
			`SELECT v FROM tenant_globex.secrets`,
			`SELECT * FROM kailash_globex.executions`,
			`SELECT * FROM kailash_acme.executions`,
			`SELECT * FROM kailash.tenants`,
			`SELECT * FROM executions`,
			`ATTACH DATABASE 'globex.data.db' AS g`,
			`PRAGMA query_only = 0`,
			`SET ROLE postgres`,
			`SELECT set_config('role', 'postgres', false)`,
			`SELECT query_to_xml('SELECT * FROM kailash.tenants', true, true, '')`,
			`SELECT query_to_xml('SELECT * FROM tenant_globex.secrets', true, true, '')`,
		} {
			for _, readOnly := range []bool{true, false} {
				res, err := st.TenantQuery(ctx, "acme", TenantQuery{SQL: q, ReadOnly: readOnly, MaxRows: 10})
				if err == nil {
					t.Errorf("acme ran %q (read_only %v): %+v", q, readOnly, res)
				}
			}
		}
		res, err = ro("globex", `SELECT v FROM secrets`)
		if err != nil || len(res.Rows) != 1 {
			t.Fatalf("globex reads its own: %v %+v", err, res)
		}
	})

	t.Run("sql node", func(t *testing.T) {
		x := NewExecutor(ExecutorOptions{Store: st})
		if _, err := st.TenantQuery(ctx, "hooli", TenantQuery{SQL: `CREATE TABLE users (name TEXT, role TEXT)`, MaxRows: 1}); err != nil {
			t.Fatal(err)
		}
		for _, u := range [][2]string{{"alice", "admin"}, {"bob", "user"}} {
			if _, err := st.TenantQuery(ctx, "hooli", TenantQuery{SQL: `INSERT INTO users VALUES ($1, $2)`, Args: []any{u[0], u[1]}, MaxRows: 1}); err != nil {
				t.Fatal(err)
			}
		}
		lookup := mustCompile(t, Definition{Name: "lookup", Nodes: []Node{{ID: "q", Type: "sql", Config: map[string]any{
			"query": "SELECT name, role FROM users WHERE name = $1", "params": []any{"who.name"}}}}})
		hooli := Caller{Tenant: "hooli", User: "u"}
		res, err := x.Run(ctx, lookup, map[string]any{"who": map[string]any{"name": "alice"}}, hooli, RunOptions{})
		if err != nil || res.Output["count"] != 1.0 || res.Output["first"].(map[string]any)["role"] != "admin" {
			t.Fatalf("lookup: %v %+v", err, res)
		}
		// SQL injection through the node's parameters: every payload is a
		// value, compared as a string; nothing runs and nothing matches.
		for _, payload := range []string{
			`' OR '1'='1`,
			`alice' --`,
			`x'; DROP TABLE users; --`,
			`x"; DELETE FROM users; --`,
			`'); INSERT INTO users VALUES ('mallory', 'admin'); --`,
			`alice' UNION SELECT name, role FROM users --`,
			`$1`,
		} {
			res, err := x.Run(ctx, lookup, map[string]any{"who": map[string]any{"name": payload}}, hooli, RunOptions{})
			if err != nil || res.Output["count"] != 0.0 {
				t.Errorf("payload %q: %v %+v", payload, err, res)
			}
		}
		all, err := st.TenantQuery(ctx, "hooli", TenantQuery{SQL: `SELECT name FROM users ORDER BY name`, ReadOnly: true, MaxRows: 10})
		if err != nil || len(all.Rows) != 2 {
			t.Fatalf("users after the payloads: %v %+v", err, all)
		}
		// The input's params list, and a read-only default that refuses writes.
		ins := mustCompile(t, Definition{Name: "ins", Nodes: []Node{{ID: "q", Type: "sql", Config: map[string]any{"query": "INSERT INTO users VALUES ($1, $2)"}}}})
		if _, err := x.Run(ctx, ins, map[string]any{"params": []any{"eve", "admin"}}, hooli, RunOptions{}); err == nil {
			t.Fatal("a read-only (default) sql node wrote")
		}
		ins = mustCompile(t, Definition{Name: "ins", Nodes: []Node{{ID: "q", Type: "sql", Config: map[string]any{"query": "INSERT INTO users VALUES ($1, $2)", "read_only": false}}}})
		if _, err := x.Run(ctx, ins, map[string]any{"params": []any{"eve", "user"}}, hooli, RunOptions{}); err != nil {
			t.Fatalf("read_only: false: %v", err)
		}
		// Another tenant running the same workflow sees its own database.
		if _, err := x.Run(ctx, lookup, map[string]any{"who": map[string]any{"name": "alice"}}, Caller{Tenant: "globex", User: "g"}, RunOptions{}); err == nil {
			t.Fatal("globex read hooli's users table")
		}
	})
}

func TestSQLNodeConfig(t *testing.T) {
	for q, want := range map[string]string{
		"SELECT 1; DROP TABLE x":           "one statement only",
		"SELECT 1;; SELECT 2":              "one statement only",
		"SELECT 'a;b'":                     "",
		"SELECT 1; -- trailing comment":    "",
		"SELECT 1 /* ; */":                 "",
		"SELECT \"a;\" FROM t;":            "",
		"SELECT 'unterminated":             "unterminated quote",
		"SELECT 1 /* x":                    "unterminated comment",
		"SELECT 1;\n/* c */ \n":            "",
		"SELECT $1 -- ; DELETE FROM users": "",
	} {
		_, err := Compile(Definition{Name: "w", Nodes: []Node{{ID: "q", Type: "sql", Config: map[string]any{"query": q}}}})
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%q: %v, want %q", q, err, want)
		}
	}
	for _, cfg := range []map[string]any{
		{},
		{"query": "SELECT 1", "params": "name"},
		{"query": "SELECT 1", "read_only": "no"},
		{"query": "SELECT 1", "max_rows": 0.0},
		{"query": "SELECT 1", "max_rows": 1e9},
	} {
		if _, err := Compile(Definition{Name: "w", Nodes: []Node{{ID: "q", Type: "sql", Config: cfg}}}); err == nil {
			t.Errorf("config %v accepted", cfg)
		}
	}
}

// A server runs on Postgres when runner.postgres_dsn is set.
func TestServerOnPostgres(t *testing.T) {
	pg := testenv.StartPostgres(t)
	wfs, err := LoadDir("../examples/workflows")
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServerCfg(t, wfs, config.Runner{PostgresDSN: pg.DSN})
	c := apiClient{t, s.Handler(), map[string]string{"x-kailash-tenant": "acme", "x-kailash-user": "alice"}}
	code, body := c.do("POST", "/v1/workflows/hello/executions", `{"order":42}`)
	if code != 200 {
		t.Fatalf("execute: %d %v", code, body)
	}
	code, body = c.do("GET", "/v1/workflows/hello/executions/"+body["execution_id"].(string), "")
	if code != 200 || body["status"] != "completed" {
		t.Fatalf("get: %d %v", code, body)
	}
}
