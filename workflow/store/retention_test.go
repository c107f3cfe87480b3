package store

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/testenv"
)

func TestPurgeSQLite(t *testing.T) {
	st, err := OpenStoreWith(t.Context(), t.TempDir(), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	purgeSuite(t, st)
}

func TestPurgePostgres(t *testing.T) {
	pg := testenv.StartPostgres(t)
	purgeSuite(t, openPG(t, pg.DSN, 0))
}

func count(t *testing.T, st Store, tenant, query string, args ...any) int {
	t.Helper()
	td, err := st.(*sqlStore).db(t.Context(), tenant)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := td.db.QueryRowContext(t.Context(), td.q(query), args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// finished stores an execution with nodes node results that finished at
// at, its lease ended (as it is long after an execution ends).
func finished(t *testing.T, st Store, tenant, id, status string, nodes int, at time.Time) {
	t.Helper()
	ctx := t.Context()
	if err := startExec(t, st, tenant, id, 0); err != nil {
		t.Fatal(err)
	}
	for i := range nodes {
		if err := st.RecordNode(ctx, tenant, id, NodeRun{Node: fmt.Sprintf("n%d", i), Type: "identity", Status: "completed", Started: at, Finished: at}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.FinishExecution(ctx, tenant, id, status, map[string]any{"ok": true}, ""); err != nil {
		t.Fatal(err)
	}
	rawExec(t, st, tenant, `UPDATE {t}executions SET finished_at = ?, lease_expires = 0 WHERE id = ?`, at.UTC().Format(time.RFC3339Nano), id)
}

func exists(t *testing.T, st Store, tenant, id string) bool {
	t.Helper()
	_, err := st.GetExecution(t.Context(), tenant, id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func purgeSuite(t *testing.T, st Store) {
	ctx := t.Context()
	now := time.Now()
	old, recent := now.Add(-48*time.Hour), now.Add(-time.Hour)
	day := now.Add(-24 * time.Hour)

	finished(t, st, "acme", "old-done", StatusCompleted, 2, old)
	finished(t, st, "acme", "old-failed", StatusFailed, 0, old)
	finished(t, st, "acme", "recent", StatusCompleted, 1, recent)
	finished(t, st, "globex", "g-old", StatusCancelled, 1, old)
	// Running, long ago and with its lease ended (a dead runner's, not yet
	// taken over): never purged, even with a finished_at.
	if err := startExec(t, st, "acme", "running-old", 0); err != nil {
		t.Fatal(err)
	}
	rawExec(t, st, "acme", `UPDATE {t}executions SET created_at = ?, finished_at = ?, lease_expires = 0 WHERE id = ?`,
		old.UTC().Format(time.RFC3339Nano), old.UTC().Format(time.RFC3339Nano), "running-old")
	// Finished long ago but its lease still live: left alone.
	finished(t, st, "acme", "live-lease", StatusCompleted, 1, old)
	rawExec(t, st, "acme", `UPDATE {t}executions SET lease_expires = {now} + 3600000 WHERE id = ?`, "live-lease")
	for _, a := range []struct {
		tenant, id string
		at         time.Time
	}{{"acme", "a-old", old}, {"acme", "a-recent", recent}, {"globex", "g-a-old", old}} {
		if err := st.Audit(ctx, AuditRecord{ID: a.id, At: a.at, Tenant: a.tenant, User: "alice", Workflow: "w", Execution: "e", Node: "n", Action: "read", Details: map[string]any{"k": "v"}}); err != nil {
			t.Fatal(err)
		}
	}

	res, err := st.Purge(ctx, day, day)
	if err != nil {
		t.Fatal(err)
	}
	if want := (PurgeResult{Executions: 3, NodeResults: 3, Audit: 2}); res != want {
		t.Fatalf("purged %+v, want %+v", res, want)
	}
	for _, id := range []string{"old-done", "old-failed"} {
		if exists(t, st, "acme", id) {
			t.Errorf("%s survived the purge", id)
		}
	}
	if exists(t, st, "globex", "g-old") {
		t.Error("globex's old execution survived the purge")
	}
	if n := count(t, st, "acme", `SELECT COUNT(*) FROM {t}node_results WHERE execution_id = ?`, "old-done"); n != 0 {
		t.Errorf("%d node results of a purged execution left", n)
	}
	for _, id := range []string{"recent", "running-old", "live-lease"} {
		if !exists(t, st, "acme", id) {
			t.Errorf("%s was purged", id)
		}
	}
	if e, _ := st.GetExecution(ctx, "acme", "recent"); e == nil || len(e.Nodes) != 1 {
		t.Errorf("the recent execution lost its node results: %+v", e)
	}
	if n := count(t, st, "acme", `SELECT COUNT(*) FROM {t}audit_log WHERE id = ?`, "a-recent"); n != 1 {
		t.Error("the recent audit row was purged")
	}
	if n := count(t, st, "acme", `SELECT COUNT(*) FROM {t}audit_log`) + count(t, st, "globex", `SELECT COUNT(*) FROM {t}audit_log`); n != 1 {
		t.Errorf("%d audit rows left, want 1", n)
	}

	// Again: nothing left to purge.
	if res, err := st.Purge(ctx, day, day); err != nil || res != (PurgeResult{}) {
		t.Fatalf("second purge: %+v %v", res, err)
	}

	// A zero time skips its table: a cutoff in the future for the audit
	// only takes the recent audit row, no execution.
	if res, err := st.Purge(ctx, time.Time{}, now.Add(time.Hour)); err != nil || res != (PurgeResult{Audit: 1}) {
		t.Fatalf("audit-only purge: %+v %v", res, err)
	}
	if !exists(t, st, "acme", "recent") {
		t.Fatal("an audit-only purge deleted an execution")
	}

	// An execution that just ended keeps its lease for a TTL: even a
	// cutoff in the future leaves it, and a running one with a live lease.
	if err := startExec(t, st, "acme", "just-ended", 0); err != nil {
		t.Fatal(err)
	}
	if err := st.FinishExecution(ctx, "acme", "just-ended", StatusCompleted, nil, ""); err != nil {
		t.Fatal(err)
	}
	if err := startExec(t, st, "acme", "running-live", 0); err != nil {
		t.Fatal(err)
	}
	res, err = st.Purge(ctx, now.Add(time.Hour), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Executions != 1 || res.NodeResults != 1 { // "recent" and its node
		t.Fatalf("future-cutoff purge: %+v, want only the recent execution", res)
	}
	for _, id := range []string{"just-ended", "running-live", "running-old", "live-lease"} {
		if !exists(t, st, "acme", id) {
			t.Errorf("%s was purged though running or its lease is live", id)
		}
	}

	// Many rows: deleted in batches, every one of them.
	defer func(n int) { purgeBatch = n }(purgeBatch)
	purgeBatch = 3
	for i := range 10 {
		finished(t, st, "initech", fmt.Sprintf("bulk-%d", i), StatusCompleted, 2, old)
	}
	res, err = st.Purge(ctx, day, time.Time{})
	if err != nil || res != (PurgeResult{Executions: 10, NodeResults: 20}) {
		t.Fatalf("batched purge: %+v %v", res, err)
	}
	if n := count(t, st, "initech", `SELECT COUNT(*) FROM {t}executions`); n != 0 {
		t.Fatalf("%d executions left after a batched purge", n)
	}
}

// Two replicas purging one PostgreSQL database at the same time split the
// rows between them (SKIP LOCKED): every old row is deleted exactly once,
// neither fails, and what must stay stays.
func TestPurgePostgresConcurrentReplicas(t *testing.T) {
	pg := testenv.StartPostgres(t)
	a, b := openPG(t, pg.DSN, 0), openPG(t, pg.DSN, 0)
	defer func(n int) { purgeBatch = n }(purgeBatch)
	purgeBatch = 50
	const n = 2000
	old := time.Now().Add(-48 * time.Hour).UTC().Format(time.RFC3339Nano)
	if err := startExec(t, a, "acme", "running", 0); err != nil {
		t.Fatal(err)
	}
	rawExec(t, a, "acme", `INSERT INTO {t}executions (id, workflow, status, "user", input, created_at, finished_at)
		SELECT 'bulk-' || g, 'w', 'completed', 'alice', '{}', ?, ? FROM generate_series(1, ?) g`, old, old, n)
	rawExec(t, a, "acme", `INSERT INTO {t}node_results (execution_id, node, type, status, started_at, finished_at)
		SELECT 'bulk-' || g, 'n', 'identity', 'completed', ?, ? FROM generate_series(1, ?) g`, old, old, n)
	rawExec(t, a, "acme", `INSERT INTO {t}audit_log (id, at, "user", workflow, execution_id, node, action, resource, details)
		SELECT 'audit-' || g, ?, 'alice', 'w', 'e', 'n', 'read', '', '{}' FROM generate_series(1, ?) g`, old, n)

	cut := time.Now().Add(-24 * time.Hour)
	var wg sync.WaitGroup
	results := make([]PurgeResult, 2)
	errs := make([]error, 2)
	for i, st := range []Store{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = st.Purge(t.Context(), cut, cut)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	sum := results[0].Add(results[1])
	if sum != (PurgeResult{Executions: n, NodeResults: n, Audit: n}) {
		t.Fatalf("replicas purged %+v and %+v: sum %+v, want %d of each", results[0], results[1], sum, n)
	}
	t.Logf("replica a purged %+v, replica b %+v", results[0], results[1])
	for q, want := range map[string]int{
		`SELECT COUNT(*) FROM {t}executions`:   1, // the running one
		`SELECT COUNT(*) FROM {t}node_results`: 0,
		`SELECT COUNT(*) FROM {t}audit_log`:    0,
	} {
		if got := count(t, a, "acme", q); got != want {
			t.Errorf("%s: %d, want %d", q, got, want)
		}
	}
	if e := status(t, b, "acme", "running"); e.Status != StatusRunning {
		t.Fatalf("the running execution: %+v", e)
	}
}
