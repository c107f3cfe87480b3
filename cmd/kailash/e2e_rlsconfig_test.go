package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/envoy"
	"github.com/kailash-gw/kailash/envoy/envoytest"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// rlsEdgeConfig is an envoyproxy/ratelimit config as their users write it:
// per user of the "api" routes, 3 an hour.
const rlsEdgeConfig = `domain: edge
descriptors:
  - key: generic_key
    value: api
    descriptors:
      - key: user
        rate_limit:
          unit: hour
          requests_per_unit: 3
`

// staticRLSBootstrap is a user's own Envoy: a static listener whose route
// sends the descriptor (generic_key=api, user=<x-user header>) to the
// rate-limit service at rls in domain edge, failing closed.
func staticRLSBootstrap(admin, listen, upstream, rls string) string {
	hp := func(a string) (string, string) { i := strings.LastIndex(a, ":"); return a[:i], a[i+1:] }
	lh, lp := hp(listen)
	uh, up := hp(upstream)
	rh, rp := hp(rls)
	ah, ap := hp(admin)
	return fmt.Sprintf(`admin:
  address: {socket_address: {address: %s, port_value: %s}}
static_resources:
  listeners:
  - name: edge
    address: {socket_address: {address: %s, port_value: %s}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: edge
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route:
                  cluster: app
                  rate_limits:
                  - actions:
                    - generic_key: {descriptor_value: api}
                    - request_headers: {header_name: x-user, descriptor_key: user}
          http_filters:
          - name: envoy.filters.http.ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
              domain: edge
              failure_mode_deny: true
              timeout: 2s
              rate_limit_service:
                transport_api_version: V3
                grpc_service: {envoy_grpc: {cluster_name: rls}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: app
    type: STATIC
    load_assignment:
      cluster_name: app
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]
  - name: rls
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: rls
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]
`, ah, ap, lh, lp, uh, up, rh, rp)
}

// An Envoy with its own ratelimit filter and route actions calls
// `kailash ratelimit --rls-config` (an envoyproxy/ratelimit config, no
// kailash.yaml): the 4th request of a user in the hour is 429, answers
// carry the RateLimit headers, and an edit of the file (alice unlimited)
// applies without a restart.
func TestRLSConfigThroughEnvoy(t *testing.T) {
	bin := envoytest.Binary(t)
	up, body := slowUpstream(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(conf, []byte(rlsEdgeConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	rls, rlsHTTP, admin, listen := testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)
	r := startKailash(t, "ratelimit", "--rls-config", dir, "-grpc", rls, "-http", rlsHTTP, "--response-headers")
	ctx, cancel := context.WithCancel(context.Background())
	proc, err := envoy.Start(ctx, envoy.Options{Binary: bin, Bootstrap: []byte(staticRLSBootstrap(admin, listen, up, rls)), AdminAddr: admin, Log: testWriter{t}})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-proc.Done() })
	rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
	defer rcancel()
	if err := proc.WaitReady(rctx); err != nil {
		t.Fatal(err)
	}
	get := func(user string) (int, http.Header, string, error) {
		req, _ := http.NewRequest("GET", "http://"+listen+"/items", nil)
		req.Header.Set("x-user", user)
		c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Do(req)
		if err != nil {
			return 0, nil, "", err
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b), err
	}
	// Wait until the service answers (a warm-up user of its own).
	testenv.Eventually(t, 60*time.Second, func() error {
		select {
		case <-r.done:
			t.Fatalf("kailash ratelimit exited: %v\n%s", r.err, r.out)
		default:
		}
		code, _, _, err := get("warmup")
		if err != nil || code != 200 {
			return fmt.Errorf("warm-up: %d %v", code, err)
		}
		return nil
	})
	for i := range 3 {
		code, h, got, err := get("alice")
		if err != nil || code != 200 || got != body {
			t.Fatalf("request %d of alice's 3: %d %v", i+1, code, err)
		}
		if h.Get("RateLimit-Limit") != "3" || h.Get("RateLimit-Remaining") != fmt.Sprint(2-i) || h.Get("RateLimit-Reset") == "" {
			t.Fatalf("request %d: RateLimit headers %v", i+1, h)
		}
	}
	code, h, _, err := get("alice")
	if err != nil || code != 429 {
		t.Fatalf("request 4 of alice's 3: %d %v, want 429", code, err)
	}
	if h.Get("RateLimit-Remaining") != "0" {
		t.Fatalf("429 RateLimit-Remaining %q", h.Get("RateLimit-Remaining"))
	}
	if code, _, _, err := get("bob"); err != nil || code != 200 {
		t.Fatalf("bob counts apart from alice: %d %v", code, err)
	}

	// Hot reload: alice's own value beats the key-only default.
	edited := strings.Replace(rlsEdgeConfig, "      - key: user\n", "      - key: user\n        value: alice\n        rate_limit: {unlimited: true}\n      - key: user\n", 1)
	if err := os.WriteFile(conf, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if code, _, _, err := get("alice"); err != nil || code != 200 {
			return fmt.Errorf("alice after the edit: %d %v", code, err)
		}
		return nil
	})
	if !strings.Contains(r.out.String(), "envoyproxy/ratelimit config reloaded") {
		t.Fatalf("no reload logged:\n%s", r.out)
	}

	// A broken edit is refused, naming file and key, and the last good config stays.
	if err := os.WriteFile(conf, []byte(edited+"    rate_limt: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if !strings.Contains(r.out.String(), "config.yaml:") || !strings.Contains(r.out.String(), "unknown key 'rate_limt'") {
			return fmt.Errorf("no rejection logged yet")
		}
		return nil
	})
	if code, _, _, err := get("alice"); err != nil || code != 200 {
		t.Fatalf("alice after a rejected edit: %d %v", code, err)
	}
}
