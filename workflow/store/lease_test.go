package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/kailash-gw/kailash/internal/testenv"
)

func openPG(t *testing.T, dsn string, ttl time.Duration) Store {
	t.Helper()
	st, err := OpenPostgresStoreWith(t.Context(), dsn, StoreOptions{LeaseTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func startExec(t *testing.T, st Store, tenant, id string, max int) error {
	t.Helper()
	return st.StartExecution(t.Context(), &ExecutionRecord{ID: id, Workflow: "w", Tenant: tenant, User: "alice", CreatedAt: Now(), MaxRunning: max})
}

func status(t *testing.T, st Store, tenant, id string) *ExecutionRecord {
	t.Helper()
	e, err := st.GetExecution(t.Context(), tenant, id)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// A second runner starting on the same PostgreSQL leaves the first one's
// live executions alone, and the first one's result is stored. (Before
// leases the second marked every running execution interrupted and the
// completion, matching only status = 'running', was dropped.)
func TestPostgresSecondRunnerLeavesLiveExecutions(t *testing.T) {
	pg := testenv.StartPostgres(t)
	ctx := t.Context()
	a := openPG(t, pg.DSN, 0)
	if err := startExec(t, a, "acme", "live", 0); err != nil {
		t.Fatal(err)
	}
	b := openPG(t, pg.DSN, 0) // the second replica starts mid-execution
	if e := status(t, b, "acme", "live"); e.Status != StatusRunning {
		t.Fatalf("the second runner's start touched a live execution: %+v", e)
	}
	if err := a.RecordNode(ctx, "acme", "live", NodeRun{Node: "n", Type: "identity", Status: "completed", Started: time.Now(), Finished: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := a.FinishExecution(ctx, "acme", "live", StatusCompleted, map[string]any{"answer": 42.0}, ""); err != nil {
		t.Fatal(err)
	}
	if e := status(t, b, "acme", "live"); e.Status != StatusCompleted || e.Output["answer"] != 42.0 || len(e.Nodes) != 1 {
		t.Fatalf("the first runner's result was not stored: %+v", e)
	}
	// The other replica cannot write it.
	if err := b.FinishExecution(ctx, "acme", "live", StatusFailed, nil, "x"); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("a write by a runner that does not own the execution: %v", err)
	}
}

// A runner that stops renewing loses its executions to a surviving one,
// which marks them interrupted naming the dead owner; a late write by the
// dead owner is refused as ErrLeaseLost and counted, and its heartbeat
// reports the loss.
func TestPostgresTakeoverOfExpiredLeases(t *testing.T) {
	pg := testenv.StartPostgres(t)
	ctx := t.Context()

	dead := openPG(t, pg.DSN, time.Second)
	if err := startExec(t, dead, "acme", "orphan", 0); err != nil {
		t.Fatal(err)
	}
	deadOwner := dead.Owner()
	dead.Close() // no more heartbeats
	survivor := openPG(t, pg.DSN, time.Second)
	testenv.Eventually(t, 20*time.Second, func() error {
		e := status(t, survivor, "acme", "orphan")
		if e.Status != StatusInterrupted || !strings.Contains(e.Error, deadOwner) || !strings.Contains(e.Error, survivor.Owner()) || e.FinishedAt == "" {
			return errors.New("not taken over yet: " + e.Status + " " + e.Error)
		}
		return nil
	})
	if n := survivor.LeaseStats().TakenOver; n != 1 {
		t.Fatalf("taken over %d, want 1", n)
	}

	// A runner that is alive but whose lease ended (a long stall): its
	// heartbeat (every 10s here) does not run before the sweep.
	stalled := openPG(t, pg.DSN, 30*time.Second)
	var lost []string
	var mu sync.Mutex
	stalled.OnLeaseLost(func(tenant, id string) { mu.Lock(); lost = append(lost, tenant+"/"+id); mu.Unlock() })
	for _, id := range []string{"slow1", "slow2"} {
		if err := startExec(t, stalled, "acme", id, 0); err != nil {
			t.Fatal(err)
		}
	}
	rawExec(t, stalled, "acme", `UPDATE {t}executions SET lease_expires = 0 WHERE owner = ?`, stalled.Owner())
	if err := survivor.(*sqlStore).sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if err := stalled.FinishExecution(ctx, "acme", "slow1", StatusCompleted, map[string]any{"late": true}, ""); !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), survivor.Owner()) {
		t.Fatalf("a write after the takeover: %v", err)
	}
	stalled.(*sqlStore).heartbeat(ctx)
	mu.Lock()
	if len(lost) != 1 || lost[0] != "acme/slow2" {
		t.Fatalf("lost leases reported: %v", lost)
	}
	mu.Unlock()
	if st := stalled.LeaseStats(); st.Lost != 2 {
		t.Fatalf("lost %d, want 2", st.Lost)
	}
	if e := status(t, survivor, "acme", "slow1"); e.Status != StatusInterrupted || e.Output != nil {
		t.Fatalf("slow1: %+v", e)
	}
}

// The heartbeat keeps a running execution's lease live past its TTL.
func TestHeartbeatRenewsLeases(t *testing.T) {
	pg := testenv.StartPostgres(t)
	a := openPG(t, pg.DSN, time.Second)
	if err := startExec(t, a, "acme", "long", 0); err != nil {
		t.Fatal(err)
	}
	b := openPG(t, pg.DSN, time.Second) // sweeps every 500ms
	time.Sleep(3 * time.Second)         // three TTLs
	if e := status(t, b, "acme", "long"); e.Status != StatusRunning {
		t.Fatalf("a renewed execution was taken over: %+v", e)
	}
	if err := a.FinishExecution(t.Context(), "acme", "long", StatusCompleted, nil, ""); err != nil {
		t.Fatal(err)
	}
}

// max_concurrent_executions counts the tenant's live executions on every
// runner: starts on two replicas at once admit exactly the limit.
func TestPostgresConcurrencyLimitAcrossRunners(t *testing.T) {
	pg := testenv.StartPostgres(t)
	a, b := openPG(t, pg.DSN, 0), openPG(t, pg.DSN, 0)
	if err := startExec(t, a, "acme", "warm", 0); err != nil { // creates the tenant
		t.Fatal(err)
	}
	if err := a.FinishExecution(t.Context(), "acme", "warm", StatusCompleted, nil, ""); err != nil {
		t.Fatal(err)
	}
	const limit = 5
	var ok, limited atomic.Int64
	var wg sync.WaitGroup
	for i := range 40 {
		st := []Store{a, b}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := startExec(t, st, "acme", "c"+string(rune('a'+i/26))+string(rune('a'+i%26)), limit)
			var le *LimitError
			switch {
			case err == nil:
				ok.Add(1)
			case errors.As(err, &le) && le.Limit == "max_concurrent_executions":
				limited.Add(1)
			default:
				t.Errorf("start: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != limit || limited.Load() != 40-limit {
		t.Fatalf("admitted %d, limited %d; want %d and %d", ok.Load(), limited.Load(), limit, 40-limit)
	}
	// Another tenant has its own count.
	if err := startExec(t, b, "globex", "g1", limit); err != nil {
		t.Fatal(err)
	}
}

// runner.role_limits.<role>.max_concurrent_executions counts the running
// executions of the role's holders in the tenant on every runner: starts
// by analysts on two replicas at once admit exactly the limit, while
// callers without the role are not counted against it, a holder of several
// roles is, another tenant has its own count, a deferred start (a
// synchronous execution's) is refused all the same, and an ended
// execution frees its slot.
func TestPostgresRoleLimitAcrossRunners(t *testing.T) {
	pg := testenv.StartPostgres(t)
	a, b := openPG(t, pg.DSN, 0), openPG(t, pg.DSN, 0)
	ctx := t.Context()
	start := func(st Store, ctx context.Context, tenant, id string, roles []string, limits map[string]int) error {
		return st.StartExecution(ctx, &ExecutionRecord{ID: id, Workflow: "w", Tenant: tenant, User: "u-" + id, CreatedAt: Now(), Roles: roles, RoleLimits: limits})
	}
	if err := start(a, ctx, "acme", "warm", nil, nil); err != nil { // creates the tenant
		t.Fatal(err)
	}
	const limit = 3
	analyst := map[string]int{"analyst": limit}
	var ok, limited, others atomic.Int64
	var admitted sync.Map
	var wg sync.WaitGroup
	for i := range 40 {
		st := []Store{a, b}[i%2]
		wg.Go(func() {
			id := fmt.Sprintf("r%02d", i)
			if i%4 == 3 { // an ops caller: no role limit, not an analyst
				if err := start(st, ctx, "acme", id, []string{"ops"}, nil); err != nil {
					t.Errorf("an ops start: %v", err)
				}
				others.Add(1)
				return
			}
			err := start(st, ctx, "acme", id, []string{"analyst"}, analyst)
			var le *LimitError
			switch {
			case err == nil:
				ok.Add(1)
				admitted.Store(id, st)
			case errors.As(err, &le) && le.Limit == "max_concurrent_executions" && strings.Contains(le.Msg, "role analyst"):
				limited.Add(1)
			default:
				t.Errorf("start: %v", err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != limit || limited.Load() != 30-limit || others.Load() != 10 {
		t.Fatalf("analysts admitted %d, limited %d (ops %d); want %d, %d (10)", ok.Load(), limited.Load(), others.Load(), limit, 30-limit)
	}
	// A holder of analyst and ops is an analyst.
	if err := start(b, ctx, "acme", "both", []string{"ops", "analyst"}, analyst); err == nil {
		t.Fatal("a caller holding analyst among other roles was not counted against analyst's limit")
	}
	// Deferred (a synchronous execution's start) is still refused: the
	// count is its answer.
	if err := start(a, Deferred(ctx), "acme", "deferred", []string{"analyst"}, analyst); err == nil {
		t.Fatal("a deferred start passed a full role limit")
	}
	if err := start(a, ctx, "globex", "g1", []string{"analyst"}, analyst); err != nil {
		t.Fatalf("another tenant's analyst: %v", err)
	}
	// One ends (on the replica that owns it): one more is admitted, on the
	// other replica.
	var id string
	var owner Store
	admitted.Range(func(k, v any) bool { id, owner = k.(string), v.(Store); return false })
	if err := owner.FinishExecution(ctx, "acme", id, StatusCompleted, nil, ""); err != nil {
		t.Fatal(err)
	}
	other := a
	if owner == a {
		other = b
	}
	if err := start(other, ctx, "acme", "after", []string{"analyst"}, analyst); err != nil {
		t.Fatalf("after one ended: %v", err)
	}
	if err := start(owner, ctx, "acme", "after2", []string{"analyst"}, analyst); err == nil {
		t.Fatal("the freed slot was given twice")
	}
}

// SQLite serves one runner: a second one on the same data directory is
// refused with an error that says so, until the first one stops.
func TestSQLiteRefusesSecondRunner(t *testing.T) {
	dir := t.TempDir()
	a, err := OpenStoreWith(t.Context(), dir, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := startExec(t, a, "acme", "e1", 0); err != nil {
		t.Fatal(err)
	}
	_, err = OpenStoreWith(t.Context(), dir, StoreOptions{})
	if err == nil || !strings.Contains(err.Error(), "another runner holds") || !strings.Contains(err.Error(), "runner.postgres_dsn") {
		t.Fatalf("second runner: %v", err)
	}
	if e := status(t, a, "acme", "e1"); e.Status != StatusRunning {
		t.Fatalf("the refused runner touched the first one's execution: %+v", e)
	}
	// A maintenance tool (kailash keys) may open it beside the runner.
	m, err := OpenStoreWith(t.Context(), dir, StoreOptions{Maintenance: true})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	a.Close()
	b, err := OpenStoreWith(t.Context(), dir, StoreOptions{})
	if err != nil {
		t.Fatalf("after the first runner stopped: %v", err)
	}
	defer b.Close()
	if e := status(t, b, "acme", "e1"); e.Status != StatusInterrupted {
		t.Fatalf("after the restart: %+v", e)
	}
}

// A database written before leases (schema version 2) is migrated in
// place: the columns are added with defaults, an execution it left running
// is interrupted and new ones are leased.
func TestMigrationAddsLeaseColumns(t *testing.T) {
	dir := t.TempDir()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "acme.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`CREATE TABLE schema_migrations (version INTEGER NOT NULL)`, migrations[0], migrations[1],
		`INSERT INTO schema_migrations (version) VALUES (1), (2)`,
		`INSERT INTO executions (id, workflow, status, "user", input, created_at) VALUES ('old', 'w', 'running', 'alice', '{}', '2026-01-01T00:00:00Z')`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	st, err := OpenStoreWith(context.Background(), dir, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if e := status(t, st, "acme", "old"); e.Status != StatusInterrupted {
		t.Fatalf("the old running execution: %+v", e)
	}
	if err := startExec(t, st, "acme", "new", 3); err != nil {
		t.Fatal(err)
	}
	var owner string
	var lease int64
	td, _ := st.(*sqlStore).db(t.Context(), "acme")
	if err := td.db.QueryRow(`SELECT owner, lease_expires FROM executions WHERE id = 'new'`).Scan(&owner, &lease); err != nil {
		t.Fatal(err)
	}
	if owner != st.Owner() || time.UnixMilli(lease).Before(time.Now()) {
		t.Fatalf("new execution: owner %q (want %q), lease %v", owner, st.Owner(), time.UnixMilli(lease))
	}
}

// A synchronous execution's start that PostgreSQL counts (Deferred: no
// client is told of it before its end commits) is committed with
// synchronous_commit off, by the second writer: the count is as exact
// across runners as a durable start's, the row is committed (another
// runner reads it) when the start returns, a refused batch (a duplicate
// id) leaves no failed transaction on a pooled connection, and the end
// commits durably on the first writer.
func TestPostgresDeferredCountedStartsCommitAsync(t *testing.T) {
	pg := testenv.StartPostgres(t)
	a, b := openPG(t, pg.DSN, 0), openPG(t, pg.DSN, 0)
	ctx := Deferred(t.Context())
	start := func(st Store, id string, max int) error {
		return st.StartExecution(ctx, &ExecutionRecord{ID: id, Workflow: "w", Tenant: "acme", User: "alice", CreatedAt: Now(), MaxRunning: max})
	}
	if err := startExec(t, a, "acme", "warm", 0); err != nil { // creates the tenant
		t.Fatal(err)
	}
	const limit = 5
	var ok, limited atomic.Int64
	var wg sync.WaitGroup
	for i := range 40 {
		st := []Store{a, b}[i%2]
		wg.Go(func() {
			var le *LimitError
			switch err := start(st, fmt.Sprintf("d%02d", i), limit+1); { // "warm" holds one slot
			case err == nil:
				ok.Add(1)
			case errors.As(err, &le):
				limited.Add(1)
			default:
				t.Errorf("start: %v", err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != limit || limited.Load() != 40-limit {
		t.Fatalf("admitted %d, limited %d; want %d and %d", ok.Load(), limited.Load(), limit, 40-limit)
	}
	for _, st := range []Store{a, b} {
		if cs := st.(*sqlStore).CommitStats(); cs.Async == 0 {
			t.Errorf("no batch was committed asynchronously: %+v", cs)
		}
	}
	// Committed when the start returned: the other runner sees it.
	if err := start(a, "seen", 1000); err != nil {
		t.Fatal(err)
	}
	if e := status(t, b, "acme", "seen"); e.Status != StatusRunning {
		t.Fatalf("the other runner reads %q", e.Status)
	}
	// A duplicate id fails its start alone, and every later start on the
	// pool's connections works.
	if err := start(a, "seen", 1000); err == nil {
		t.Fatal("a duplicate start was accepted")
	}
	for i := range 30 {
		if err := start(a, fmt.Sprintf("after%02d", i), 1000); err != nil {
			t.Fatalf("start %d after a refused one: %v", i, err)
		}
		if err := a.FinishExecution(t.Context(), "acme", fmt.Sprintf("after%02d", i), StatusCompleted, nil, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.FinishExecution(t.Context(), "acme", "seen", StatusCompleted, map[string]any{"ok": true}, ""); err != nil {
		t.Fatal(err)
	}
	if e := status(t, b, "acme", "seen"); e.Status != StatusCompleted {
		t.Fatalf("ended execution reads %q on the other runner", e.Status)
	}
}

// On PostgreSQL the node results of an execution started in an earlier
// batch are written by one statement under one ownership check: all of
// them are stored (outputs and errors intact, a repeated node upserted),
// and none when another runner owns the execution — each refused as a
// lost lease, with the end.
func TestPostgresGroupedNodeResults(t *testing.T) {
	pg := testenv.StartPostgres(t)
	a, b := openPG(t, pg.DSN, 0), openPG(t, pg.DSN, 0)
	ctx := t.Context()
	now := time.Now()
	node := func(name string, i int) NodeRun {
		return NodeRun{Node: name, Type: "transform", Status: StatusCompleted, Output: map[string]any{"i": i}, Started: now, Finished: now}
	}
	// Committed alone first (not Deferred), so the nodes are conditional.
	if err := startExec(t, a, "acme", "grouped", 0); err != nil {
		t.Fatal(err)
	}
	dctx := Deferred(ctx)
	for i, n := range []string{"a", "b", "c", "b"} { // b twice: the second overwrites
		r := node(n, i)
		if n == "c" {
			r.Status, r.Error, r.Output = "failed", "boom", nil
		}
		if err := a.RecordNode(dctx, "acme", "grouped", r); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.FinishExecution(ctx, "acme", "grouped", StatusFailed, nil, "boom"); err != nil {
		t.Fatal(err)
	}
	e := status(t, b, "acme", "grouped")
	got := map[string]NodeRun{}
	for _, n := range e.Nodes {
		got[n.Node] = n
	}
	if e.Status != StatusFailed || len(got) != 3 || fmt.Sprint(got["a"].Output["i"]) != "0" || fmt.Sprint(got["b"].Output["i"]) != "3" ||
		got["c"].Error != "boom" || got["c"].Status != "failed" {
		t.Fatalf("execution %s with nodes %+v", e.Status, e.Nodes)
	}
	// Owned by a: b's node results and end are refused, none stored.
	if err := startExec(t, a, "acme", "theirs", 0); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"x", "y"} {
		if err := b.RecordNode(dctx, "acme", "theirs", node(n, 0)); err != nil {
			t.Fatal(err) // deferred: refused later, logged
		}
	}
	if err := b.FinishExecution(ctx, "acme", "theirs", StatusCompleted, nil, ""); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("the other runner's end: %v", err)
	}
	if e := status(t, a, "acme", "theirs"); e.Status != StatusRunning || len(e.Nodes) != 0 {
		t.Fatalf("another runner wrote into a's execution: %s %+v", e.Status, e.Nodes)
	}
	if cs := a.(*sqlStore).CommitStats(); cs.Batches == 0 {
		t.Fatal("no commits counted")
	}
}
