package xds

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kailash-gw/kailash/envoy/envoytest"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// envoyBinary is the Envoy the tests drive ($ENVOY_BIN, PATH, or bin/envoy
// from `make envoy`); in CI a missing one fails the test.
func envoyBinary(t *testing.T) string {
	t.Helper()
	return envoytest.Binary(t)
}

const e2eBootstrap = `
node: {id: %[1]q, cluster: kailash}
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: %[2]d}}
dynamic_resources:
  ads_config:
    api_type: %[4]s
    transport_api_version: V3
    grpc_services: [{envoy_grpc: {cluster_name: kailash_xds}}]
  lds_config: {ads: {}, resource_api_version: V3}
  cds_config: {ads: {}, resource_api_version: V3}
static_resources:
  clusters:
  - name: kailash_xds
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: kailash_xds
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %[3]d}}}}]}]
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
`

// TestRealEnvoy runs Envoy against the control plane: it must accept every
// resource (no NACK), answer unknown hosts with the 404, fail closed (503)
// for a tenant while ext_authz is unreachable, and take an update; with one
// route table over state-of-the-world ADS and with per-tenant (scoped)
// routes over delta ADS.
func TestRealEnvoy(t *testing.T) {
	for _, mode := range []struct{ routes, api string }{
		{config.RoutesSingle, "GRPC"},
		{config.RoutesPerTenant, "DELTA_GRPC"},
	} {
		t.Run(mode.routes+"/"+mode.api, func(t *testing.T) { testRealEnvoy(t, mode.routes, mode.api) })
	}
}

func testRealEnvoy(t *testing.T, routes, api string) {
	bin := envoyBinary(t)
	cfg := testConfig()
	cfg.Envoy.Routes = routes
	cfg.Envoy.Listen = config.MustHostPort(testenv.FreeAddr(t))
	cfg.Authz.GRPC = config.MustHostPort(testenv.FreeAddr(t)) // nothing listens: Check fails
	s := newServer(t, cfg)
	serve(t, s)

	adminAddr := testenv.FreeAddr(t)
	_, adminPort, _ := config.SplitHostPort(adminAddr)
	_, xdsPort, _ := config.SplitHostPort(s.GRPCAddr())
	dir := t.TempDir()
	boot := filepath.Join(dir, "bootstrap.yaml")
	if err := os.WriteFile(boot, fmt.Appendf(nil, e2eBootstrap, cfg.Envoy.NodeID, adminPort, xdsPort, api), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-c", boot, "--use-dynamic-base-id", "-l", "warning", "--log-path", filepath.Join(dir, "envoy.log"))
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "envoy.log")); err == nil {
				t.Logf("envoy log:\n%s", b)
			}
		}
	})

	stat := func(name string) int {
		resp, err := http.Get("http://" + adminAddr + "/stats?filter=^" + strings.ReplaceAll(name, ".", `\.`) + "$")
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ": "); ok && k == name {
				n, _ := strconv.Atoi(v)
				return n
			}
		}
		return -1
	}
	rdsOK := "http.ingress_http.rds.kailash_routes.update_success"
	ready := []string{"cluster_manager.cds.update_success", "listener_manager.lds.update_success", rdsOK}
	if routes == config.RoutesPerTenant {
		rdsOK = "http.ingress_http.scoped_rds.kailash_scopes.update_success"
		ready = append(ready[:2], rdsOK, "http.ingress_http.rds.kailash_routes_acme.update_success")
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		for _, name := range ready {
			if stat(name) < 1 {
				return fmt.Errorf("%s not yet 1", name)
			}
		}
		if stat("listener_manager.total_listeners_active") != 1 {
			return fmt.Errorf("listener not active")
		}
		return nil
	})

	get := func(host string) (int, string) {
		req, err := http.NewRequest(http.MethodGet, "http://"+cfg.Envoy.Listen.String()+"/x", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// Unknown hosts are answered by Envoy alone, ext_authz down or not (one
	// table: the catch-all; per-tenant: no route, and ext_authz checks no
	// request without a route).
	unknownCode, unknownBody := http.StatusNotFound, "unknown host\n"
	if code, body := get("nobody.example"); code != unknownCode || body != unknownBody {
		t.Errorf("unknown host: %d %q, want %d %q", code, body, unknownCode, unknownBody)
	}
	// Host names are case-insensitive, with a port or without. The 503 is
	// ext_authz failing closed (an empty body), not the runner being
	// unreachable: nothing reaches the runner unauthorized.
	for _, host := range []string{"acme.localhost:1234", "ACME.Localhost", "Acme.localhost:80"} {
		if code, body := get(host); code != http.StatusServiceUnavailable || body != "" {
			t.Errorf("%s, a tenant with ext_authz down: %d %q, want 503 from ext_authz (fail closed)", host, code, body)
		}
	}

	rds := stat(rdsOK)
	next := testConfig()
	next.Envoy, next.Authz = cfg.Envoy, cfg.Authz
	next.Tenants = append(next.Tenants, config.Tenant{ID: "globex", Domains: []string{"globex.localhost"}})
	if err := s.Update(next); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if stat(rdsOK) <= rds {
			return fmt.Errorf("routes not updated")
		}
		return nil
	})
	testenv.Eventually(t, 10*time.Second, func() error {
		if code, body := get("globex.localhost"); code != http.StatusServiceUnavailable {
			return fmt.Errorf("new tenant: %d %q, want 503 from ext_authz", code, body)
		}
		return nil
	})
	if code, body := get("nobody.example"); code != unknownCode || body != unknownBody {
		t.Errorf("unknown host after the update: %d %q", code, body)
	}
	if n := testutil.CollectAndCount(s.m.nacks); n != 0 {
		t.Errorf("Envoy NACKed %d types", n)
	}
	rejected := []string{"cluster_manager.cds.update_rejected", "listener_manager.lds.update_rejected", strings.Replace(rdsOK, "update_success", "update_rejected", 1)}
	if routes == config.RoutesPerTenant {
		rejected = append(rejected, "http.ingress_http.rds.kailash_routes_acme.update_rejected", "http.ingress_http.rds.kailash_routes_globex.update_rejected")
	}
	for _, name := range rejected {
		if n := stat(name); n != 0 {
			t.Errorf("%s = %d", name, n)
		}
	}
}
