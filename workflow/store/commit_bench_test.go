package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/testenv"
)

// BenchmarkLeaseHeartbeat is one heartbeat (the UPDATE renewing every
// lease this runner holds, per tenant, and the comparison with what it
// runs) with n running executions, on durable SQLite and PostgreSQL. The
// loop runs one every lease_ttl/3 (5 s by default): "of-interval" is the
// share of that interval one heartbeat takes (the target: < 5% of the
// write path's capacity).
func BenchmarkLeaseHeartbeat(b *testing.B) {
	for _, backend := range []string{"sqlite", "postgres"} {
		for _, n := range []int{100, 10_000} {
			b.Run(fmt.Sprintf("%s/running=%d", backend, n), func(b *testing.B) {
				var st Store
				var err error
				if backend == "sqlite" {
					st, err = OpenStoreWith(context.Background(), b.TempDir(), StoreOptions{})
				} else {
					st, err = OpenPostgresStoreWith(context.Background(), testenv.StartPostgresDurable(b).DSN, StoreOptions{})
				}
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { st.Close() })
				s := st.(*sqlStore)
				ctx := context.Background()
				done := make(chan error, n)
				for i := range n {
					go func() {
						done <- st.StartExecution(ctx, &ExecutionRecord{ID: fmt.Sprintf("e%06d", i), Workflow: "w", Tenant: "acme", User: "alice", CreatedAt: Now()})
					}()
				}
				for range n {
					if err := <-done; err != nil {
						b.Fatal(err)
					}
				}
				b.ResetTimer()
				start := time.Now()
				for b.Loop() {
					s.heartbeat(ctx)
				}
				per := time.Since(start) / time.Duration(b.N)
				b.ReportMetric(float64(per.Microseconds()), "µs/heartbeat")
				b.ReportMetric(100*per.Seconds()/(s.lease.ttl/3).Seconds(), "%-of-interval")
				if st := s.LeaseStats(); st.Lost != 0 {
					b.Fatalf("heartbeats took %d of their own executions for lost", st.Lost)
				}
			})
		}
	}
}
