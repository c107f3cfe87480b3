package main

// Load runs through the real Envoy: requests per second for a whole
// authorized request (Envoy → ext_authz → runner → storage) with the
// runner's executions on SQLite and on PostgreSQL.

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
)

func benchThroughEnvoy(b *testing.B, runnerExtra string) {
	s := startStackConfig(b, func(p ports) string {
		c := configYAML(b, p, "acme")
		return strings.Replace(c, "identity_audience: kailash-runner}", "identity_audience: kailash-runner, "+runnerExtra+", limits: {max_concurrent_executions: 1000}}", 1)
	})
	tok := s.token(devtoken.Claims{Tenant: "acme", Subject: "alice", Roles: []string{"business_user"}})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	url := "http://" + s.ports.envoy + "/v1/workflows/hello/executions"
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("POST", url, strings.NewReader(`{"order": 42}`))
			req.Host = "acme.localhost"
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

func BenchmarkThroughEnvoySQLite(b *testing.B) {
	benchThroughEnvoy(b, fmt.Sprintf("data_dir: %q", filepath.Join(b.TempDir(), "data")))
}

func BenchmarkThroughEnvoyPostgres(b *testing.B) {
	pg := testenv.StartPostgres(b)
	benchThroughEnvoy(b, fmt.Sprintf("postgres_dsn: %q", pg.DSN))
}
