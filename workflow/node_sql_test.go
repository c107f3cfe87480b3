package workflow

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/workflow/store"
)

// sqlTricks are texts that are two statements to SQLite but hide the ';'
// from a scanner that does not know SQLite's [bracketed] (and other)
// quoting: the quote characters inside the brackets pair up across the
// real ';'.
var sqlTricks = []string{
	"SELECT 1 AS [a'] ; DELETE FROM items; SELECT 1 AS [']",
	`SELECT 1 AS [a"] ; DELETE FROM items; SELECT 1 AS ["]`,
	"SELECT 1 AS [a`] ; DELETE FROM items; SELECT 1 AS [`]",
	"SELECT 1 AS [--] ; DELETE FROM items",
	"SELECT 1 AS [/*] ; DELETE FROM items; SELECT 1 AS [*/]",
}

func TestSQLOneStatementSQLiteQuoting(t *testing.T) {
	st, err := store.OpenStore(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := t.Context()
	for _, q := range []string{`CREATE TABLE items (name TEXT)`, `INSERT INTO items VALUES ('a')`} {
		if _, err := st.TenantQuery(ctx, "acme", store.TenantQuery{SQL: q, MaxRows: 1}); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range sqlTricks {
		// The hole is real: the store runs such a text as a script.
		if _, err := st.TenantQuery(ctx, "acme", store.TenantQuery{SQL: q, MaxRows: 10}); err != nil {
			t.Fatalf("%q on SQLite: %v", q, err)
		}
		res, err := st.TenantQuery(ctx, "acme", store.TenantQuery{SQL: `SELECT count(*) AS n FROM items`, ReadOnly: true, MaxRows: 1})
		if err != nil || fmt.Sprint(res.Rows[0]["n"]) != "0" {
			t.Fatalf("%q did not run its second statement on SQLite (%v %v): the test proves nothing", q, res, err)
		}
		if _, err := st.TenantQuery(ctx, "acme", store.TenantQuery{SQL: `INSERT INTO items VALUES ('a')`, MaxRows: 1}); err != nil {
			t.Fatal(err)
		}
		// The sql node refuses it when the workflow is compiled.
		_, err = Compile(Definition{Name: "w", Nodes: []Node{{ID: "q", Type: "sql", Config: map[string]any{"query": q, "read_only": false}}}})
		if err == nil || !strings.Contains(err.Error(), "one statement only") {
			t.Errorf("%q: compile got %v, want one statement only", q, err)
		}
	}
	// SQLite's quoting no longer raises false alarms either.
	for _, q := range []string{"SELECT 1 AS [x;y]", "SELECT 'a;b' AS `c;d`", "SELECT 1; -- done", "SELECT 1;;\n/* c */ ;",
		"CREATE TRIGGER tr AFTER INSERT ON items BEGIN DELETE FROM items WHERE 0; END"} {
		if _, err := prepareSQL(map[string]any{"query": q}); err != nil {
			t.Errorf("%q: %v", q, err)
		}
	}
	for _, q := range []string{"SELECT 1; SELECT 2", "CREATE TRIGGER tr AFTER INSERT ON items BEGIN SELECT 1; END; DELETE FROM items", "SELECT 1;\x00DELETE FROM items"} {
		if _, err := prepareSQL(map[string]any{"query": q}); err == nil {
			t.Errorf("%q accepted", q)
		}
	}
}

// TestSQLOneStatementPostgres: on PostgreSQL the store's extended protocol
// refuses a second statement by itself, including behind SQLite-style
// tricks that PostgreSQL reads differently.
func TestSQLOneStatementPostgres(t *testing.T) {
	pg := testenv.StartPostgres(t)
	st, err := store.OpenPostgresStore(t.Context(), pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := t.Context()
	for _, q := range []string{`CREATE TABLE items (name TEXT)`, `INSERT INTO items VALUES ('a')`} {
		if _, err := st.TenantQuery(ctx, "acme", store.TenantQuery{SQL: q, MaxRows: 1}); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range append([]string{"SELECT 1; DELETE FROM items", "SELECT $$x$$; DELETE FROM items", "SELECT E'\\'' ; DELETE FROM items; SELECT '\\''"}, sqlTricks...) {
		if _, err := st.TenantQuery(ctx, "acme", store.TenantQuery{SQL: q, MaxRows: 10}); err == nil {
			t.Errorf("%q ran on PostgreSQL", q)
		}
	}
	res, err := st.TenantQuery(ctx, "acme", store.TenantQuery{SQL: `SELECT count(*) AS n FROM items`, ReadOnly: true, MaxRows: 1})
	if err != nil || fmt.Sprint(res.Rows[0]["n"]) != "1" {
		t.Fatalf("rows after the attempts: %v %v", res, err)
	}
}

// The sql node on both stores (with the store suite in workflow/store).

func TestSQLNodeSQLite(t *testing.T) {
	st, err := store.OpenStore(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sqlNodeSuite(t, st)
}

func TestSQLNodePostgres(t *testing.T) {
	pg := testenv.StartPostgres(t)
	st, err := store.OpenPostgresStore(t.Context(), pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sqlNodeSuite(t, st)
}

func sqlNodeSuite(t *testing.T, st store.Store) {
	ctx := context.Background()
	x := NewExecutor(ExecutorOptions{Store: st})
	if _, err := st.TenantQuery(ctx, "hooli", store.TenantQuery{SQL: `CREATE TABLE users (name TEXT, role TEXT)`, MaxRows: 1}); err != nil {
		t.Fatal(err)
	}
	for _, u := range [][2]string{{"alice", "admin"}, {"bob", "user"}} {
		if _, err := st.TenantQuery(ctx, "hooli", store.TenantQuery{SQL: `INSERT INTO users VALUES ($1, $2)`, Args: []any{u[0], u[1]}, MaxRows: 1}); err != nil {
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
	all, err := st.TenantQuery(ctx, "hooli", store.TenantQuery{SQL: `SELECT name FROM users ORDER BY name`, ReadOnly: true, MaxRows: 10})
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
