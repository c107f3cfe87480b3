package workflow

import (
	"fmt"
	"strings"
	"testing"

	"github.com/kailash-gw/kailash/internal/testenv"
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
	st, err := OpenStore(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := t.Context()
	for _, q := range []string{`CREATE TABLE items (name TEXT)`, `INSERT INTO items VALUES ('a')`} {
		if _, err := st.TenantQuery(ctx, "acme", TenantQuery{SQL: q, MaxRows: 1}); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range sqlTricks {
		// The hole is real: the store runs such a text as a script.
		if _, err := st.TenantQuery(ctx, "acme", TenantQuery{SQL: q, MaxRows: 10}); err != nil {
			t.Fatalf("%q on SQLite: %v", q, err)
		}
		res, err := st.TenantQuery(ctx, "acme", TenantQuery{SQL: `SELECT count(*) AS n FROM items`, ReadOnly: true, MaxRows: 1})
		if err != nil || fmt.Sprint(res.Rows[0]["n"]) != "0" {
			t.Fatalf("%q did not run its second statement on SQLite (%v %v): the test proves nothing", q, res, err)
		}
		if _, err := st.TenantQuery(ctx, "acme", TenantQuery{SQL: `INSERT INTO items VALUES ('a')`, MaxRows: 1}); err != nil {
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
	st, err := OpenPostgresStore(t.Context(), pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := t.Context()
	for _, q := range []string{`CREATE TABLE items (name TEXT)`, `INSERT INTO items VALUES ('a')`} {
		if _, err := st.TenantQuery(ctx, "acme", TenantQuery{SQL: q, MaxRows: 1}); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range append([]string{"SELECT 1; DELETE FROM items", "SELECT $$x$$; DELETE FROM items", "SELECT E'\\'' ; DELETE FROM items; SELECT '\\''"}, sqlTricks...) {
		if _, err := st.TenantQuery(ctx, "acme", TenantQuery{SQL: q, MaxRows: 10}); err == nil {
			t.Errorf("%q ran on PostgreSQL", q)
		}
	}
	res, err := st.TenantQuery(ctx, "acme", TenantQuery{SQL: `SELECT count(*) AS n FROM items`, ReadOnly: true, MaxRows: 1})
	if err != nil || fmt.Sprint(res.Rows[0]["n"]) != "1" {
		t.Fatalf("rows after the attempts: %v %v", res, err)
	}
}
