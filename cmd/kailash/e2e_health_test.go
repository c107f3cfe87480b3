package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// get is the status and body of GET url with Host host ("" leaves it).
func getHost(t *testing.T, url, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHealthAndReadinessThroughEnvoy: the real Envoy answers
// envoy.health_check_path itself, for any host, with no token, without
// reaching authz or the runner; it fails (503) while told to fail health
// checks (the first step of a drain) and recovers. Every component's
// /readyz?verbose lists its checks, the control plane's saying this Envoy
// acked the snapshot. The runner runs on a real PostgreSQL: stopped, the
// runner's /readyz turns 503 naming it while Envoy's own health stays 200.
func TestHealthAndReadinessThroughEnvoy(t *testing.T) {
	pg := testenv.StartPostgres(t)
	s := startStackConfig(t, func(p ports) string {
		body := configYAML(t, p, "acme")
		return strings.Replace(body, "runner: {http: "+p.runner+",", "runner: {http: "+p.runner+", postgres_dsn: \""+pg.DSN+"\",", 1)
	})
	health := "http://" + s.ports.envoy + config.DefaultHealthCheckPath
	before := s.upstreamCount()
	for _, host := range []string{"acme.localhost", "unknown.example"} {
		if code, body := getHost(t, health, host); code != 200 {
			t.Fatalf("Envoy %s (Host %s): %d %q, want 200", config.DefaultHealthCheckPath, host, code, body)
		}
	}
	if n := s.upstreamCount(); n != before {
		t.Errorf("the health check reached the runner (%d requests)", n-before)
	}
	// The path next to it is a tenant's, and needs a token as before.
	if code, _ := getHost(t, "http://"+s.ports.envoy+config.DefaultHealthCheckPath+"x", "acme.localhost"); code != 401 {
		t.Errorf("%sx without a token: %d, want 401", config.DefaultHealthCheckPath, code)
	}

	// Told to fail health checks (Drain's first step): 503, then back.
	admin := func(path string) {
		resp, err := http.Post("http://"+s.admin+path, "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	admin("/healthcheck/fail")
	if code, _ := getHost(t, health, "acme.localhost"); code != 503 {
		t.Errorf("after /healthcheck/fail: %d, want 503", code)
	}
	admin("/healthcheck/ok")
	if code, _ := getHost(t, health, "acme.localhost"); code != 200 {
		t.Errorf("after /healthcheck/ok: %d, want 200", code)
	}

	// A request through Envoy works (so the runner fetched the identity
	// keys and used PostgreSQL), then every component is ready.
	alice := s.token(devtoken.Claims{Tenant: "acme", Subject: "alice", Roles: []string{"business_user"}})
	if r := s.mustDo("acme.localhost", alice, nil); r.code != 200 {
		t.Fatalf("request through Envoy: %d %s", r.code, r.body)
	}
	for _, c := range []struct{ name, addr, want string }{
		{"xds", s.ports.xdsHTTP, "[+]shutdown ok\n[+]snapshot ok\n[+]envoy_ack ok\nreadyz check passed\n"},
		{"authz", s.ports.authzHTTP, "[+]shutdown ok\n[+]config ok\n[+]policy ok\nreadyz check passed\n"},
		{"runner", s.ports.runner, "[+]shutdown ok\n[+]postgres ok\n[+]identity_jwks ok\nreadyz check passed\n"},
	} {
		if code, body := getHost(t, "http://"+c.addr+"/readyz?verbose", ""); code != 200 || body != c.want {
			t.Errorf("%s /readyz?verbose: %d %q, want 200 %q", c.name, code, body, c.want)
		}
	}
	// The control plane knows what this Envoy holds.
	var acked bool
	envoys := s.xds.Status().Envoys
	for _, n := range envoys.List {
		acked = acked || (n.NodeID == "e2e-envoy" && n.AckedVersion == s.xds.Version())
	}
	if !acked {
		t.Errorf("xds envoys %+v: e2e-envoy has not acked %s", envoys.List, s.xds.Version())
	}
	if code, body := getHost(t, "http://"+s.ports.xdsHTTP+"/metrics", ""); code != 200 ||
		!strings.Contains(body, `kailash_ready_check{check="envoy_ack",component="xds"} 1`) ||
		!strings.Contains(body, "kailash_xds_snapshot_build_seconds_count") {
		t.Errorf("xds /metrics lacks the ready check or the build histogram")
	}

	// PostgreSQL goes away: the runner says so, Envoy's health does not.
	pg.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		code, body := getHost(t, "http://"+s.ports.runner+"/readyz?verbose", "")
		if code == 503 && strings.Contains(body, "[-]postgres failed: postgresql: ") && strings.HasSuffix(body, "readyz check failed\n") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("runner /readyz with PostgreSQL stopped: %d %q", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body := getHost(t, "http://"+s.ports.runner+"/readyz/identity_jwks", ""); code != 200 {
		t.Errorf("runner /readyz/identity_jwks: %d %q (only postgres should fail)", code, body)
	}
	if code, _ := getHost(t, health, "acme.localhost"); code != 200 {
		t.Errorf("Envoy health with the runner's database down: %d, want 200 (Envoy itself serves)", code)
	}
}
