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
	benchThroughEnvoyWith(b, runnerExtra, nil)
}

func benchThroughEnvoyWith(b *testing.B, runnerExtra string, edit func(string) string) {
	s := startStackConfig(b, func(p ports) string {
		c := configYAML(b, p, "acme")
		c = strings.Replace(c, "identity_audience: kailash-runner}", "identity_audience: kailash-runner, "+runnerExtra+", limits: {max_concurrent_executions: 1000}}", 1)
		if edit != nil {
			c = edit(c)
		}
		return c
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
	pg := testenv.StartPostgresDurable(b) // fsync and synchronous_commit on, as in production
	benchThroughEnvoy(b, fmt.Sprintf("postgres_dsn: %q", pg.DSN))
}

// BenchmarkThroughEnvoyTelemetry is BenchmarkThroughEnvoySQLite with the
// access log off and to a file, and with tracing at ratio 1 and 0.01 to a
// real OTLP receiver (which counts the spans and drops them): what the
// access log and tracing cost a whole request.
func BenchmarkThroughEnvoyTelemetry(b *testing.B) {
	for _, bc := range []struct {
		name      string
		accessLog bool
		ratio     float64 // < 0: tracing off
	}{{"access-log-off", false, -1}, {"access-log-file", true, -1}, {"tracing-1", true, 1}, {"tracing-0.01", true, 0.01}} {
		b.Run(bc.name, func(b *testing.B) {
			dir := b.TempDir()
			var recv *otlpReceiver
			otlp := ""
			if bc.ratio >= 0 {
				recv, otlp = startOTLPReceiver(b, true)
			}
			benchThroughEnvoyWith(b, fmt.Sprintf("data_dir: %q", filepath.Join(dir, "data")), func(c string) string {
				if bc.accessLog {
					c = strings.Replace(c, `access_log: "off"`, "access_log: "+filepath.Join(dir, "access.log"), 1)
				}
				if otlp != "" {
					c = strings.Replace(c, "\ntenants:\n", fmt.Sprintf("\ntelemetry: {otlp_endpoint: \"http://%s\", sampling_ratio: %g}\ntenants:\n", otlp, bc.ratio), 1)
				}
				return c
			})
			if recv != nil {
				recv.mu.Lock()
				b.ReportMetric(float64(recv.count)/float64(b.N), "spans/req-exported-so-far")
				recv.mu.Unlock()
			}
		})
	}
}
