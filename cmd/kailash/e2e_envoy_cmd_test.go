package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/envoy/envoytest"
	"github.com/kailash-gw/kailash/extauthz"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/workflow/api"
	"github.com/kailash-gw/kailash/xds"
)

// `kailash envoy -c FILE --http-addr ADDR` (the chart's envoy container):
// the pinned Envoy on the config's bootstrap, against xds, authz and the
// runner running apart; /readyz answers 200 once Envoy is LIVE, requests
// are authorized through it, and on SIGTERM (ctx) it drains, stops Envoy
// and returns nil, after which /readyz is gone.
func TestEnvoyCommand(t *testing.T) {
	bin := envoytest.Binary(t)
	p := freePorts(t)
	cfgPath := filepath.Join(t.TempDir(), "kailash.yaml")
	writeConfig(t, cfgPath, configYAML(t, p, "acme")+"shutdown: {pre_stop_delay: 200ms, drain_timeout: 2s}\n")
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	log := testLogger(t)
	sctx, stopServers := context.WithCancel(context.Background())
	rs, err := api.New(cfg, api.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	as, err := extauthz.New(sctx, cfg, extauthz.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	xs, err := xds.New(cfg, xds.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, serve := range []func(context.Context) error{rs.Serve, as.Serve, xs.Serve} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = serve(sctx) }()
	}
	t.Cleanup(func() { stopServers(); wg.Wait() })

	health := testenv.FreeAddr(t)
	ectx, sigterm := context.WithCancel(context.Background())
	defer sigterm()
	done := make(chan error, 1)
	go func() {
		done <- runEnvoy(ectx, []string{"-c", cfgPath, "--envoy", bin, "--http-addr", health, "--concurrency", "1"}, io.Discard)
	}()
	client := &http.Client{Timeout: 2 * time.Second}
	get := func(url string) int {
		resp, err := client.Get(url)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	deadline := time.Now().Add(60 * time.Second)
	for get("http://"+health+"/readyz") != http.StatusOK {
		select {
		case err := <-done:
			t.Fatalf("kailash envoy returned before ready: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz on %s not 200 within 60s", health)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if c := get("http://" + health + "/healthz"); c != http.StatusOK {
		t.Fatalf("/healthz: %d", c)
	}
	// Ready means Envoy is LIVE and its listener answers the health path.
	if resp, err := client.Get("http://" + health + "/readyz?verbose"); err != nil {
		t.Fatal(err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "[+]shutdown ok\n[+]envoy_live ok\n[+]listener ok\nreadyz check passed\n"; string(b) != want {
			t.Errorf("/readyz?verbose: %q, want %q", b, want)
		}
	}
	if err := waitListener(ectx, p.envoy); err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile("../../examples/keys/dev-signing-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	key, err := devtoken.Key(pem)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := devtoken.Mint(key, devtoken.Claims{Issuer: "https://dev.kailash.local", Audience: []string{"kailash"}, Tenant: "acme",
		Subject: "alice", Roles: []string{"admin"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		auth string
		want int
	}{{"", http.StatusUnauthorized}, {"Bearer " + tok, http.StatusOK}} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+p.envoy+"/v1/workflows", nil)
		req.Host = "acme.localhost"
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Fatalf("GET /v1/workflows (auth %t) through kailash envoy: %d, want %d", tc.auth != "", resp.StatusCode, tc.want)
		}
	}
	sigterm()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("kailash envoy after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("kailash envoy did not return within 30s of SIGTERM")
	}
	if c := get("http://" + health + "/readyz"); c != 0 {
		t.Fatalf("/readyz still answers %d after kailash envoy returned", c)
	}
	if c := get("http://" + p.envoy + "/"); c != 0 {
		t.Fatalf("Envoy still serves (%d) after kailash envoy returned", c)
	}
}
