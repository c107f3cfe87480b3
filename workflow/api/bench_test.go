package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/workflow"
)

// BenchmarkHTTPExecuteSQLite is a whole synchronous execution through the
// API handler with the execution and node results written to SQLite.
func BenchmarkHTTPExecuteSQLite(b *testing.B) {
	benchHTTPExecute(b, config.Runner{DataDir: b.TempDir()}, false)
}

// BenchmarkHTTPExecuteSQLiteParallel is the same from GOMAXPROCS callers.
func BenchmarkHTTPExecuteSQLiteParallel(b *testing.B) {
	benchHTTPExecute(b, config.Runner{DataDir: b.TempDir()}, true)
}

// BenchmarkHTTPExecutePostgres is a whole synchronous execution through the
// API handler with the records written to PostgreSQL.
func BenchmarkHTTPExecutePostgres(b *testing.B) {
	benchHTTPExecute(b, config.Runner{PostgresDSN: testenv.StartPostgres(b).DSN}, false)
}

// BenchmarkHTTPExecutePostgresParallel is the same from GOMAXPROCS callers
// (PostgreSQL takes concurrent writers; SQLite has one per tenant).
func BenchmarkHTTPExecutePostgresParallel(b *testing.B) {
	benchHTTPExecute(b, config.Runner{PostgresDSN: testenv.StartPostgres(b).DSN}, true)
}

func benchHTTPExecute(b *testing.B, r config.Runner, parallel bool) {
	wfs, err := workflow.LoadDir("../../examples/workflows")
	if err != nil {
		b.Fatal(err)
	}
	r.HTTP = "127.0.0.1:0"
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
	start := time.Now()
	if parallel {
		b.SetParallelism(4)
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
}

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }

func newExecRequest() *http.Request {
	r := httptest.NewRequest("POST", "/v1/workflows/hello/executions", strings.NewReader(`{"order":42}`))
	r.Header.Set("x-kailash-tenant", "acme")
	r.Header.Set("x-kailash-user", "alice")
	return r
}
