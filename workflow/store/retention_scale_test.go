//go:build scale

package store

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/testenv"
)

// go test -tags scale -run TestPurgeScale ./workflow/store -v
//
// A large purge (100k executions with 3 node results each, 100k audit
// rows) while the runner keeps writing to the same tenant: every old row
// goes, every write succeeds, and the log shows how long the purge took
// and the slowest concurrent write (what a batch's lock costs a writer).
func TestPurgeScaleSQLite(t *testing.T) {
	st, err := OpenStoreWith(t.Context(), t.TempDir(), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	purgeScale(t, st)
}

func TestPurgeScalePostgres(t *testing.T) {
	pg := testenv.StartPostgres(t)
	purgeScale(t, openPG(t, pg.DSN, 0))
}

func purgeScale(t *testing.T, st Store) {
	const n = 100_000
	old := time.Now().Add(-48 * time.Hour).UTC().Format(time.RFC3339Nano)
	series := `(WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?) SELECT n FROM g) AS s`
	start := time.Now()
	rawExec(t, st, "acme", `INSERT INTO {t}executions (id, workflow, status, "user", input, output, created_at, finished_at)
		SELECT 'bulk-' || n, 'w', 'completed', 'alice', '{"x":1}', '{"y":2}', ?, ? FROM `+series, old, old, n)
	for _, node := range []string{"a", "b", "c"} {
		rawExec(t, st, "acme", `INSERT INTO {t}node_results (execution_id, node, type, status, output, started_at, finished_at)
			SELECT 'bulk-' || n, ?, 'identity', 'completed', '{"z":3}', ?, ? FROM `+series, node, old, old, n)
	}
	rawExec(t, st, "acme", `INSERT INTO {t}audit_log (id, at, "user", workflow, execution_id, node, action, resource, details)
		SELECT 'audit-' || n, ?, 'alice', 'w', 'e', 'n', 'read', '', '{}' FROM `+series, old, n)
	t.Logf("seeded %d executions, %d node results, %d audit rows in %s", n, 3*n, n, time.Since(start).Round(time.Millisecond))

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes, slowest atomic.Int64
	var werr atomic.Value
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			t0 := time.Now()
			id := fmt.Sprintf("live-%d", i)
			err := st.StartExecution(t.Context(), &ExecutionRecord{ID: id, Workflow: "w", Tenant: "acme", User: "bob", CreatedAt: Now()})
			if err == nil {
				err = st.RecordNode(t.Context(), "acme", id, NodeRun{Node: "a", Type: "identity", Status: "completed", Started: t0, Finished: t0})
			}
			if err == nil {
				err = st.FinishExecution(t.Context(), "acme", id, StatusCompleted, nil, "")
			}
			if err != nil {
				werr.Store(err)
				return
			}
			d := time.Since(t0).Nanoseconds()
			for {
				cur := slowest.Load()
				if d <= cur || slowest.CompareAndSwap(cur, d) {
					break
				}
			}
			writes.Add(1)
		}
	}()
	cut := time.Now().Add(-24 * time.Hour)
	start = time.Now()
	res, err := st.Purge(t.Context(), cut, cut)
	took := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if e := werr.Load(); e != nil {
		t.Fatalf("a write during the purge: %v", e)
	}
	if res != (PurgeResult{Executions: n, NodeResults: 3 * n, Audit: n}) {
		t.Fatalf("purged %+v", res)
	}
	if left := count(t, st, "acme", `SELECT COUNT(*) FROM {t}executions WHERE id LIKE 'bulk-%'`); left != 0 {
		t.Fatalf("%d old executions left", left)
	}
	t.Logf("purged %+v in %s (%.0f executions/s); meanwhile %d executions written (start+node+finish), slowest %s",
		res, took.Round(time.Millisecond), float64(n)/took.Seconds(), writes.Load(), time.Duration(slowest.Load()).Round(time.Microsecond))
}
