package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

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
		st, err := OpenPostgresStoreWith(t.Context(), pg.DSN, StoreOptions{LeaseTTL: time.Second})
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
	def := json.RawMessage(`{"name":"w1","nodes":[{"id":"a","type":"identity"}]}`)

	t.Run("workflows", func(t *testing.T) {
		if err := st.PutWorkflow(ctx, "acme", "alice", "w1", def, 10); err != nil {
			t.Fatal(err)
		}
		if err := st.PutWorkflow(ctx, "acme", "alice", "w1", def, 10); !errors.Is(err, ErrExists) {
			t.Fatalf("duplicate: %v", err)
		}
		sw, err := st.GetWorkflow(ctx, "acme", "w1")
		if err != nil || string(sw.Definition) != string(def) || sw.CreatedBy != "alice" || sw.Digest == "" {
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
				errs <- st.PutWorkflow(ctx, "initech", "u", fmt.Sprintf("c%d", i), def, 5)
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

	t.Run("workflow versions", func(t *testing.T) {
		v := func(n int) json.RawMessage {
			return json.RawMessage(fmt.Sprintf(`{"name":"wv","nodes":[{"id":"n%d","type":"identity"}]}`, n))
		}
		if err := st.PutWorkflow(ctx, "hooli", "alice", "wv", v(1), 10); err != nil {
			t.Fatal(err)
		}
		if w, err := st.GetWorkflow(ctx, "hooli", "wv"); err != nil || w.Version != 1 || w.UpdatedBy != "alice" {
			t.Fatalf("created: %v %+v", err, w)
		}
		if n, err := st.UpdateWorkflow(ctx, "hooli", "bob", "wv", v(2), 1); err != nil || n != 2 {
			t.Fatalf("update at 1: %d %v", n, err)
		}
		var vc *VersionConflictError
		if _, err := st.UpdateWorkflow(ctx, "hooli", "bob", "wv", v(3), 1); !errors.As(err, &vc) || vc.Current != 2 || vc.Want != 1 {
			t.Fatalf("update at a stale version: %v", err)
		}
		if _, err := st.UpdateWorkflow(ctx, "hooli", "bob", "nope", v(3), 0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("update of a missing workflow: %v", err)
		}
		w, err := st.GetWorkflow(ctx, "hooli", "wv")
		if err != nil || w.Version != 2 || w.CreatedBy != "alice" || w.UpdatedBy != "bob" || !strings.Contains(string(w.Definition), "n2") {
			t.Fatalf("current after the update: %v %+v", err, w)
		}
		// Unconditional updates at once: each gets its own version.
		var wg sync.WaitGroup
		got := make(chan int, 8)
		for range 8 {
			wg.Go(func() {
				n, err := st.UpdateWorkflow(ctx, "hooli", "bob", "wv", v(9), 0)
				if err != nil {
					t.Error(err)
				}
				got <- n
			})
		}
		wg.Wait()
		close(got)
		seen := map[int]bool{}
		for n := range got {
			seen[n] = true
		}
		if len(seen) != 8 {
			t.Fatalf("concurrent updates got versions %v, want 8 distinct", seen)
		}
		// Deleted, the history stays (executions name it) and a re-created
		// name continues the count.
		if err := st.DeleteWorkflow(ctx, "hooli", "wv"); err != nil {
			t.Fatal(err)
		}
		if old, err := st.GetWorkflowVersion(ctx, "hooli", "wv", 1); err != nil || old.Version != 1 || !strings.Contains(string(old.Definition), "n1") {
			t.Fatalf("version 1 after the delete: %v %+v", err, old)
		}
		if err := st.PutWorkflow(ctx, "hooli", "carol", "wv", v(1), 10); err != nil {
			t.Fatal(err)
		}
		if w, err := st.GetWorkflow(ctx, "hooli", "wv"); err != nil || w.Version != 11 {
			t.Fatalf("re-created: %v %+v; want version 11", err, w)
		}
		if _, err := st.GetWorkflowVersion(ctx, "hooli", "wv", 99); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a version that never was: %v", err)
		}
		// An execution keeps the version and roles it started with.
		e := &ExecutionRecord{ID: "ev1", Workflow: "wv", WorkflowVersion: 11, Tenant: "hooli", User: "carol", Roles: []string{"analyst", "ops"}, CreatedAt: Now()}
		if err := st.StartExecution(ctx, e); err != nil {
			t.Fatal(err)
		}
		if got, err := st.GetExecution(ctx, "hooli", "ev1"); err != nil || got.WorkflowVersion != 11 || strings.Join(got.Roles, ",") != "analyst,ops" {
			t.Fatalf("the execution's version and roles: %v %+v", err, got)
		}
		if err := st.FinishExecution(ctx, "hooli", "ev1", StatusCompleted, nil, ""); err != nil {
			t.Fatal(err)
		}
		// A deferred start and its end in one batch: one INSERT of the
		// ended row (commit.go's fold) carries them too.
		e = &ExecutionRecord{ID: "ev2", Workflow: "wv", WorkflowVersion: 11, Tenant: "hooli", User: "carol", Roles: []string{"ops"}, CreatedAt: Now()}
		if err := st.StartExecution(Deferred(ctx), e); err != nil {
			t.Fatal(err)
		}
		if err := st.FinishExecution(ctx, "hooli", "ev2", StatusCompleted, nil, ""); err != nil {
			t.Fatal(err)
		}
		if got, err := st.GetExecution(ctx, "hooli", "ev2"); err != nil || got.Status != StatusCompleted || got.WorkflowVersion != 11 || strings.Join(got.Roles, ",") != "ops" {
			t.Fatalf("a folded start's version and roles: %v %+v", err, got)
		}
	})

	t.Run("executions", func(t *testing.T) {
		e := &ExecutionRecord{ID: "e1", Workflow: "w1", Tenant: "acme", User: "alice", Input: map[string]any{"x": 1.0}, CreatedAt: Now()}
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
		if err := st.StartExecution(ctx, &ExecutionRecord{ID: "e2", Workflow: "w1", Tenant: "acme", User: "u", CreatedAt: Now()}); err != nil {
			t.Fatal(err)
		}
		dead := st.Owner()
		st.Close()   // the process stops: its leases are renewed no more
		st = open(t) // a new process finds e2 running (on PostgreSQL, once its lease ended)
		testenv.Eventually(t, 20*time.Second, func() error {
			e, err := st.GetExecution(ctx, "acme", "e2")
			if err != nil || e.Status != StatusInterrupted || e.FinishedAt == "" {
				return fmt.Errorf("after restart: %v %+v", err, e)
			}
			if !strings.Contains(e.Error, dead) && !strings.Contains(e.Error, "stopped while this execution was running") {
				return fmt.Errorf("the reason names neither the dead runner %s nor the restart: %q", dead, e.Error)
			}
			return nil
		})
		if e, _ := st.GetExecution(ctx, "acme", "e1"); e.Status != StatusCompleted {
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
}
