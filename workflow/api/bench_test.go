package api

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/workflow"
	"github.com/kailash-gw/kailash/workflow/store"
)

// The runner's HTTP API (the handler, no network) running whole synchronous
// executions of a 3-node workflow (transform → identity → transform), each
// answered only once its records are committed. Serial: one caller;
// Parallel: 16 callers; Parallel64: 64 (a runner serves many clients at
// once, and group commit turns concurrency into larger batches, not more
// fsyncs). PostgreSQL is started durable (fsync and synchronous_commit on,
// as in production), unlike the tests' PostgreSQL.

func BenchmarkHTTPExecuteSQLite(b *testing.B) {
	benchHTTPExecute(b, config.Runner{DataDir: b.TempDir()}, 0)
}

func BenchmarkHTTPExecuteSQLiteParallel(b *testing.B) {
	benchHTTPExecute(b, config.Runner{DataDir: b.TempDir()}, 16)
}

func BenchmarkHTTPExecuteSQLiteParallel64(b *testing.B) {
	benchHTTPExecute(b, config.Runner{DataDir: b.TempDir()}, 64)
}

func BenchmarkHTTPExecutePostgres(b *testing.B) {
	benchHTTPExecute(b, config.Runner{PostgresDSN: testenv.StartPostgresDurable(b).DSN}, 0)
}

func BenchmarkHTTPExecutePostgresParallel(b *testing.B) {
	benchHTTPExecute(b, config.Runner{PostgresDSN: testenv.StartPostgresDurable(b).DSN}, 16)
}

func BenchmarkHTTPExecutePostgresParallel64(b *testing.B) {
	benchHTTPExecute(b, config.Runner{PostgresDSN: testenv.StartPostgresDurable(b).DSN}, 64)
}

// bench3 is the benchmarks' 3-node chain.
func bench3(tb testing.TB) *workflow.Workflow {
	w, err := workflow.Compile(workflow.Definition{Name: "bench3", Nodes: []workflow.Node{
		{ID: "a", Type: "transform", Config: map[string]any{"set": map[string]any{"greeting": "hello"}}},
		{ID: "b", Type: "identity"},
		{ID: "c", Type: "transform", Config: map[string]any{"remove": []any{"x"}}},
	}, Connections: []workflow.Connection{{From: "a", To: "b"}, {From: "b", To: "c"}}})
	if err != nil {
		tb.Fatal(err)
	}
	return w
}

func benchHTTPExecute(b *testing.B, r config.Runner, callers int) {
	wfs := map[string]*workflow.Workflow{"bench3": bench3(b)}
	r.HTTP = config.MustHostPort("127.0.0.1:0")
	r.Limits.MaxConcurrentExecutions = 1 << 20
	s, err := New(&config.Config{Runner: r}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.ln.Close(); s.shutdown() })
	s.workflows.Store(&wfs)
	h := s.Handler()
	one := func() {
		rec := newRecorder()
		h.ServeHTTP(rec, newExecRequest())
		if rec.Code != 200 {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
	one() // opens and migrates the tenant's store
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	if callers > 0 {
		b.SetParallelism((callers + 1) / max(1, testingProcs()))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				one()
			}
		})
	} else {
		for b.Loop() {
			one()
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "exec/s")
	// CPU time of the whole process (handlers, executor, committer, GC)
	// per execution: on a shared machine steadier than exec/s, and
	// GOMAXPROCS·1e6 / it bounds exec/s on this machine's cores.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/exec")
	if cs, ok := s.store.(interface{ CommitStats() store.CommitStats }); ok {
		st := cs.CommitStats()
		b.ReportMetric(float64(st.Writes)/float64(max(st.Batches, 1)), "writes/commit")
		b.ReportMetric(float64(st.Batches)/float64(b.N), "commits/exec")
		b.ReportMetric(st.Busy.Seconds()*1e3/float64(max(st.Batches, 1)), "ms/commit")
		b.ReportMetric(st.Busy.Seconds()/time.Since(start).Seconds(), "writer-busy")
	}
}

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }

func newExecRequest() *http.Request {
	r := httptest.NewRequest("POST", "/v1/workflows/bench3/executions", strings.NewReader(`{"order":42,"x":1}`))
	r.Header.Set("x-kailash-tenant", "acme")
	r.Header.Set("x-kailash-user", "alice")
	return r
}

func testingProcs() int { return runtime.GOMAXPROCS(0) }

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
