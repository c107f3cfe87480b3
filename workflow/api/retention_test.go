package api

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/workflow/store"
)

// countingStore counts Purge calls, and fails them when fail is set.
type countingStore struct {
	store.Store
	calls atomic.Int64
	fail  bool
}

func (c *countingStore) Purge(ctx context.Context, e, a time.Time) (store.PurgeResult, error) {
	c.calls.Add(1)
	if c.fail {
		return store.PurgeResult{}, errors.New("tenant acme: purging executions: database is locked")
	}
	return c.Store.Purge(ctx, e, a)
}

// seedOld writes, in a SQLite data directory, an execution that finished
// two days ago (two node results), one that finished now, and an old and a
// new audit row; the audit details hold a secret the logs must not show.
func seedOld(t *testing.T, dir, secret string) {
	t.Helper()
	ctx := t.Context()
	st, err := store.OpenStoreWith(ctx, dir, store.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"old", "new"} {
		if err := st.StartExecution(ctx, &store.ExecutionRecord{ID: id, Workflow: "w", Tenant: "acme", User: "alice", CreatedAt: store.Now()}); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"a", "b"} {
			if err := st.RecordNode(ctx, "acme", id, store.NodeRun{Node: n, Type: "identity", Status: "completed", Started: time.Now(), Finished: time.Now()}); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.FinishExecution(ctx, "acme", id, store.StatusCompleted, map[string]any{"v": secret}, ""); err != nil {
			t.Fatal(err)
		}
	}
	for id, at := range map[string]time.Time{"audit-old": time.Now().Add(-48 * time.Hour), "audit-new": time.Now()} {
		if err := st.Audit(ctx, store.AuditRecord{ID: id, At: at, Tenant: "acme", User: "alice", Workflow: "w", Execution: "old", Node: "a", Action: "read", Details: map[string]any{"ssn": secret}}); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "acme.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	old := time.Now().Add(-48 * time.Hour).UTC().Format(time.RFC3339Nano)
	if _, err := db.Exec(`UPDATE executions SET finished_at = ?, lease_expires = 0 WHERE id = 'old'`, old); err != nil {
		t.Fatal(err)
	}
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// The runner purges on schedule while it serves: the old execution, its
// node results and the old audit row go, the recent ones stay, the
// metrics and the log say so (without row contents), and the loop stops
// when Serve returns.
func TestRunnerPurgesOnSchedule(t *testing.T) {
	dir := t.TempDir()
	const secret = "123-45-6789"
	seedOld(t, dir, secret)
	inner, err := store.OpenStoreWith(t.Context(), dir, store.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := &countingStore{Store: inner}
	logs := &testenv.LogBuffer{}
	const interval = 20 * time.Millisecond
	cfg := &config.Config{Runner: config.Runner{HTTP: config.MustHostPort("127.0.0.1:0"),
		Retention: config.Retention{Executions: 24 * time.Hour, Audit: 24 * time.Hour, Interval: interval}}}
	s, err := New(cfg, Options{Store: st, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	defer func() { cancel(); <-served }()

	testenv.Eventually(t, 20*time.Second, func() error {
		m := scrape(t, s.Addr())
		for _, want := range []string{`kailash_runner_purged_total{table="executions"} 1`, `kailash_runner_purged_total{table="node_results"} 2`,
			`kailash_runner_purged_total{table="audit_log"} 1`} {
			if !strings.Contains(m, want) {
				return errors.New("metrics lack " + want)
			}
		}
		return nil
	})
	if _, err := inner.GetExecution(t.Context(), "acme", "old"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the old execution: %v", err)
	}
	if e, err := inner.GetExecution(t.Context(), "acme", "new"); err != nil || len(e.Nodes) != 2 {
		t.Fatalf("the recent execution: %+v %v", e, err)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if st.calls.Load() < 3 {
			return errors.New("fewer than three purges yet")
		}
		return nil
	})
	if v := testutil.ToFloat64(s.purge.lastSuccess); v < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Fatalf("last success timestamp %v", v)
	}
	if v := testutil.ToFloat64(s.purge.failures); v != 0 {
		t.Fatalf("purge errors %v", v)
	}
	out := logs.String()
	if !strings.Contains(out, "runner: retention purge") || !strings.Contains(out, "executions=1 node_results=2 audit_log=1") {
		t.Fatalf("no purge log line with counts:\n%s", out)
	}
	if strings.Contains(out, secret) {
		t.Fatalf("the log shows row contents:\n%s", out)
	}

	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	served <- nil // for the deferred receive
	n := st.calls.Load()
	time.Sleep(10 * interval)
	if m := st.calls.Load(); m != n {
		t.Fatalf("%d purges after Serve returned", m-n)
	}
}

// A failing purge is counted and logged, and the last-success timestamp
// does not move; no retention means no purge loop and no purge metrics.
func TestPurgeFailureCounted(t *testing.T) {
	inner, err := store.OpenStoreWith(t.Context(), "", store.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	st := &countingStore{Store: inner, fail: true}
	logs := &testenv.LogBuffer{}
	reg := prometheus.NewRegistry()
	p := newPurger(st, config.Retention{Audit: time.Hour}, slog.New(slog.NewTextHandler(logs, nil)), reg)
	p.purgeOnce(t.Context())
	if v := testutil.ToFloat64(p.failures); v != 1 {
		t.Fatalf("errors %v, want 1", v)
	}
	if v := testutil.ToFloat64(p.lastSuccess); v != 0 {
		t.Fatalf("last success %v after a failure", v)
	}
	if !strings.Contains(logs.String(), "retention purge failed") || !strings.Contains(logs.String(), "database is locked") {
		t.Fatalf("log:\n%s", logs.String())
	}
	if newPurger(st, config.Retention{}, slog.Default(), prometheus.NewRegistry()) != nil {
		t.Fatal("a purger without retention")
	}
	s := newTestServer(t, nil)
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	if s.purge != nil || strings.Contains(scrape(t, strings.TrimPrefix(srv.URL, "http://")), "kailash_runner_purge") {
		t.Fatal("purge metrics without runner.retention")
	}
}
