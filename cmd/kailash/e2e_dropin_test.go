package main

// Drop-in mode end to end: Envoy (configured by our xDS) calls `kailash
// authz --policy ...` — no tenants or tokens required by authz — with
// policies written for opa-envoy-plugin, unchanged.

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/envoy"
	"github.com/kailash-gw/kailash/envoy/envoytest"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/workflow/api"
	"github.com/kailash-gw/kailash/xds"
)

const opaEnvoyPolicy = `package envoy.authz

import input.attributes.request.http as http_request

default allow := false

allow if http_request.method == "GET"

allow if {
	http_request.method == "POST"
	input.parsed_path == ["v1", "workflows", "hello", "executions"]
	token.payload.role == "buyer"
}

token := {"payload": payload} if {
	[_, encoded] := split(http_request.headers.authorization, " ")
	[_, payload, _] := io.jwt.decode(encoded)
}
`

type dropInStack struct {
	ports    ports
	mu       sync.Mutex
	upstream int
	client   *http.Client
}

func (s *dropInStack) send(t *testing.T, method, auth string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+s.ports.envoy+"/v1/workflows/hello/executions", strings.NewReader(`{"order": 1}`))
	req.Host = "acme.localhost"
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (s *dropInStack) reached() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.upstream
}

func TestDropInEndToEnd(t *testing.T) {
	bin := envoytest.Binary(t)
	s := &dropInStack{ports: freePorts(t), client: &http.Client{Timeout: 10 * time.Second}}
	cfgPath := filepath.Join(t.TempDir(), "kailash.yaml")
	writeConfig(t, cfgPath, configYAML(t, s.ports, "acme"))
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	policyDir := t.TempDir()
	policyFile := filepath.Join(policyDir, "policy.rego")
	if err := os.WriteFile(policyFile, []byte(opaEnvoyPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	log := testLogger(t)
	ctx, cancel := context.WithCancel(context.Background())
	record := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.mu.Lock()
			s.upstream++
			s.mu.Unlock()
			next.ServeHTTP(w, r)
		})
	}
	rs, err := api.New(cfg, api.Options{Logger: log, Middleware: record})
	if err != nil {
		t.Fatal(err)
	}
	xs, err := xds.New(cfg, xds.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	goRun := func(name string, f func() error) {
		wg.Go(func() {
			if err := f(); err != nil && ctx.Err() == nil {
				t.Errorf("%s stopped: %v", name, err)
			}
		})
	}
	goRun("runner", func() error { return rs.Serve(ctx) })
	goRun("xds", func() error { return xs.Serve(ctx) })
	// The authz server exactly as a user replacing `opa run --server` runs it.
	goRun("authz", func() error {
		return run(ctx, []string{"authz", "--policy", policyDir, "--decision", "envoy/authz/allow",
			"--grpc-addr", s.ports.authz, "--http-addr", s.ports.authzHTTP, "-log-level", "warn"}, io.Discard)
	})
	boot, err := envoy.Bootstrap(cfg)
	if err != nil {
		t.Fatal(err)
	}
	proc, err := envoy.Start(ctx, envoy.Options{Binary: bin, Bootstrap: boot, Log: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		<-proc.Done()
	})
	rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
	defer rcancel()
	if err := proc.WaitReady(rctx); err != nil {
		t.Fatal(err)
	}
	if err := waitListener(rctx, s.ports.envoy); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error { // authz listening
		if code, body := s.send(t, "DELETE", ""); code != 403 {
			return fmt.Errorf("DELETE: %d %s", code, body)
		}
		return nil
	})

	jwt := func(claims string) string {
		enc := base64.RawURLEncoding.EncodeToString
		return "Bearer " + enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc([]byte(claims)) + ".c2ln"
	}
	for _, c := range []struct {
		name, method, auth string
		allowed            bool
	}{
		{"GET is allowed with no token at all", "GET", "", true},
		{"POST by a buyer (io.jwt.decode)", "POST", jwt(`{"role":"buyer"}`), true},
		{"POST by a guest is denied", "POST", jwt(`{"role":"guest"}`), false},
		{"POST without a token is denied", "POST", "", false},
		{"DELETE is denied", "DELETE", jwt(`{"role":"buyer"}`), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := s.reached()
			code, body := s.send(t, c.method, c.auth)
			if got := s.reached() > before; got != c.allowed {
				t.Fatalf("reached upstream = %v, want %v (%d %s)", got, c.allowed, code, body)
			}
			if !c.allowed && code != 403 {
				t.Fatalf("denied with %d, want 403", code)
			}
		})
	}

	t.Run("a policy edit takes effect within 2s, nothing restarted", func(t *testing.T) {
		pid := proc.Pid()
		edited := strings.Replace(opaEnvoyPolicy, `allow if http_request.method == "GET"`, `allow if http_request.method == "DELETE"`, 1)
		tmp := policyFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(edited), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, policyFile); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		testenv.Eventually(t, 2*time.Second, func() error {
			before := s.reached()
			s.send(t, "DELETE", "")
			if s.reached() == before {
				return fmt.Errorf("DELETE still denied")
			}
			return nil
		})
		t.Logf("policy edit served after %s", time.Since(start).Round(time.Millisecond))
		before := s.reached()
		if code, _ := s.send(t, "GET", ""); code != 403 || s.reached() != before {
			t.Fatalf("GET after the edit: %d", code)
		}
		if proc.Pid() != pid {
			t.Fatal("envoy restarted")
		}
	})
}
