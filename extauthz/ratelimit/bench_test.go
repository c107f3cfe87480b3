package ratelimit

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// benchDecisions measures ShouldRateLimit over gRPC loopback, in parallel,
// each call one descriptor pair (tenant day quota + per-user quota) for one
// of 1,000 users.
func benchDecisions(b *testing.B, cfg *config.Config) {
	cfg.Tenants[0].Limits.PerUserPerHour = 1 << 40
	cfg.Tenants[0].Limits.MaxAPICallsPerDay = 1 << 40
	_, c := startServer(b, cfg, Options{})
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			r, err := c.ShouldRateLimit(context.Background(), userReq(fmt.Sprint("u", i%1000)))
			if err != nil || r.OverallCode != rlsv3.RateLimitResponse_OK {
				b.Fatal(r, err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}

func BenchmarkDecisionsMemory(b *testing.B) { benchDecisions(b, testConfig(testenv.FreeAddr(b))) }

func BenchmarkDecisionsRedis(b *testing.B) {
	rs := testenv.StartRedis(b)
	benchDecisions(b, redisConfig(rs.Addr, config.FailClosed))
}
