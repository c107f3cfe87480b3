package main

// End-to-end tests: a real Envoy, configured only by our xDS server, calling
// our ext_authz server and forwarding to our runner, all on 127.0.0.1.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/kailash-gw/kailash/envoy"
	"github.com/kailash-gw/kailash/envoy/envoytest"
	"github.com/kailash-gw/kailash/extauthz"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/internal/wire"
	"github.com/kailash-gw/kailash/workflow/api"
	"github.com/kailash-gw/kailash/xds"
)

const (
	issuer   = "https://dev.kailash.local"
	audience = "kailash"
)

func abs(t testing.TB, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// tenantYAML is one tenant trusting the example dev key.
func tenantYAML(t testing.TB, id string) string {
	return fmt.Sprintf(`  - id: %s
    domains: [%s.localhost]
    plan: enterprise
    jwt:
      issuer: %s
      audiences: [%s]
      jwks_file: %s
`, id, id, issuer, audience, abs(t, "../../examples/keys/dev.jwks.json"))
}

type ports struct{ envoy, admin, xds, xdsHTTP, authz, authzHTTP, runner string }

func freePorts(t testing.TB) ports {
	return ports{testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t),
		testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)}
}

func configYAML(t testing.TB, p ports, tenants ...string) string {
	var b strings.Builder
	// KAILASH_TEST_ROUTES and KAILASH_TEST_XDS_PROTOCOL run the end-to-end
	// tests with another envoy.routes or envoy.xds_protocol than the
	// defaults (auto, delta), e.g. KAILASH_TEST_ROUTES=single.
	// The access log is off: through the test log it would hold a line per
	// request in memory (TestTracingOneTrace turns it on, to a file).
	fmt.Fprintf(&b, `envoy: {listen: %s, admin: %s, node_id: e2e-envoy, routes: %q, xds_protocol: %q, access_log: "off"}
xds: {grpc: %s, http: %s}
authz: {grpc: %s, http: %s, timeout: 2s, max_request_bytes: 8192}
runner: {http: %s, workflows: %s, identity_jwks: "http://%s/auth/.well-known/jwks.json", identity_audience: kailash-runner}
tenants:
`, p.envoy, p.admin, os.Getenv("KAILASH_TEST_ROUTES"), os.Getenv("KAILASH_TEST_XDS_PROTOCOL"), p.xds, p.xdsHTTP, p.authz, p.authzHTTP, p.runner, abs(t, "../../examples/workflows"), p.authzHTTP)
	for _, id := range tenants {
		b.WriteString(tenantYAML(t, id))
	}
	return b.String()
}

func writeConfig(t testing.TB, path, body string) {
	t.Helper()
	// Write then rename, as editors and config management do.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// stack is the whole product on loopback: xds, authz and runner in process,
// Envoy as a child.
type stack struct {
	t          testing.TB
	ports      ports
	cfgPath    string
	proc       *envoy.Process
	stopAuthz  context.CancelFunc
	authzDone  chan error
	mu         sync.Mutex
	upstream   []http.Header // headers of every request that reached the runner
	client     *http.Client
	signingKey jwk.Key
	xds        *xds.Server
	admin      string // Envoy's admin address
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func startStack(t testing.TB, tenants ...string) *stack {
	t.Helper()
	return startStackConfig(t, func(p ports) string { return configYAML(t, p, tenants...) })
}

// startStackConfig starts the stack on the config body returns for the
// stack's ports.
func startStackConfig(t testing.TB, body func(ports) string) *stack {
	t.Helper()
	p := freePorts(t)
	return startStackWith(t, stackOptions{ports: p, body: body(p)})
}

// stackOptions shape startStackWith.
type stackOptions struct {
	ports ports
	body  string // the config file
	// xdsCfg, when set, adjusts the config the control plane (only) is built from.
	xdsCfg func(*config.Config)
}

// startStackWith starts xds, authz, the runner and (when the config names
// one) the rate-limit service in process, and a real Envoy; all stop when
// the test ends.
func startStackWith(t testing.TB, o stackOptions) *stack {
	t.Helper()
	bin := envoytest.Binary(t)
	s := &stack{t: t, ports: o.ports, client: &http.Client{Timeout: 10 * time.Second}}
	s.cfgPath = filepath.Join(t.TempDir(), "kailash.yaml")
	writeConfig(t, s.cfgPath, o.body)
	cfg, err := config.Load(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile("../../examples/keys/dev-signing-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	if s.signingKey, err = devtoken.Key(pem); err != nil {
		t.Fatal(err)
	}
	log := testLogger(t)
	ctx, cancel := context.WithCancel(context.Background())

	record := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.mu.Lock()
			s.upstream = append(s.upstream, r.Header.Clone())
			s.mu.Unlock()
			next.ServeHTTP(w, r)
		})
	}
	// telemetry in the config: the servers trace, as under kailash up.
	tr := newTracers(cfg, log)
	t.Cleanup(func() { tr.shutdown(log) })
	var tps [3]trace.TracerProvider
	for i, c := range []string{"authz", "runner", "ratelimit"} {
		if tps[i], err = tr.provider(c); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := api.New(cfg, api.Options{Logger: log, Middleware: record, TracerProvider: tps[1]})
	if err != nil {
		t.Fatal(err)
	}
	actx, stopAuthz := context.WithCancel(ctx)
	rl, err := newRateLimit(cfg, log, tps[2])
	if err != nil {
		t.Fatal(err)
	}
	aopts := extauthz.Options{Logger: log, TracerProvider: tps[0]}
	if rl != nil {
		aopts.RateLimitExplain = rl.Explain
	}
	as, err := extauthz.New(actx, cfg, aopts)
	if err != nil {
		t.Fatal(err)
	}
	xcfg := cfg
	if o.xdsCfg != nil {
		c := *cfg
		o.xdsCfg(&c)
		xcfg = &c
	}
	if s.xds, err = xds.New(xcfg, xds.Options{Logger: log}); err != nil {
		t.Fatal(err)
	}
	s.stopAuthz, s.authzDone = stopAuthz, make(chan error, 1)
	var wg sync.WaitGroup
	goRun := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && ctx.Err() == nil {
				t.Errorf("server stopped: %v", err)
			}
		}()
	}
	goRun(func() error { return rs.Serve(ctx) })
	goRun(func() error { return s.xds.Serve(ctx) })
	go func() { s.authzDone <- as.Serve(actx) }()
	var g errgroup.Group
	updaters := []updater{s.xds, as}
	if rl != nil {
		g.Go(func() error { return rl.Serve(ctx) })
		updaters = append(updaters, rl)
	}
	goRun(func() error { return watch(ctx, s.cfgPath, log, updaters...) })

	boot, err := envoy.Bootstrap(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.proc, err = envoy.Start(ctx, envoy.Options{Binary: bin, Bootstrap: boot, Log: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		<-s.authzDone
		_ = g.Wait()
		wg.Wait()
		<-s.proc.Done()
	})
	rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
	defer rcancel()
	if err := s.proc.WaitReady(rctx); err != nil {
		t.Fatal(err)
	}
	if err := waitListenerProxy(rctx, s.ports.envoy, cfg.Envoy.Listener.ProxyProtocol != nil && *cfg.Envoy.Listener.ProxyProtocol); err != nil {
		t.Fatal(err)
	}
	if s.admin, err = s.proc.AdminAddr(rctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *stack) token(c devtoken.Claims) string {
	s.t.Helper()
	if c.Issuer == "" {
		c.Issuer = issuer
	}
	if c.Audience == nil {
		c.Audience = []string{audience}
	}
	tok, err := devtoken.Mint(s.signingKey, c)
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

type reply struct {
	code   int
	header http.Header
	body   string
}

func (r reply) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r.body), &m); err != nil {
		t.Fatalf("body is not JSON (%v): %s", err, r.body)
	}
	return m
}

// do sends a request through Envoy.
func (s *stack) do(host, token string, headers map[string]string) (reply, error) {
	req, err := http.NewRequest("POST", "http://"+s.ports.envoy+"/v1/workflows/hello/executions", strings.NewReader(`{"order": 42}`))
	if err != nil {
		return reply{}, err
	}
	req.Host = host
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(b)}, nil
}

func (s *stack) mustDo(host, token string, headers map[string]string) reply {
	s.t.Helper()
	r, err := s.do(host, token, headers)
	if err != nil {
		s.t.Fatal(err)
	}
	return r
}

func (s *stack) upstreamCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.upstream)
}

func TestEndToEnd(t *testing.T) {
	s := startStack(t, "acme", "globex")
	alice := s.token(devtoken.Claims{Tenant: "acme", Subject: "alice", Roles: []string{"business_user"}})

	t.Run("allowed role reaches the runner with tenant and user", func(t *testing.T) {
		r := s.mustDo("acme.localhost", alice, nil)
		if r.code != 200 {
			t.Fatalf("got %d: %s", r.code, r.body)
		}
		m := r.json(t)
		if m["tenant"] != "acme" || m["user"] != "alice" {
			t.Fatalf("runner saw tenant=%v user=%v", m["tenant"], m["user"])
		}
		out, _ := m["output"].(map[string]any)
		if out["order"] != 42.0 || out["greeting"] != "hello" {
			t.Fatalf("runner output %v", out)
		}
	})

	t.Run("no token is 401", func(t *testing.T) {
		before := s.upstreamCount()
		r := s.mustDo("acme.localhost", "", nil)
		if r.code != 401 {
			t.Fatalf("got %d: %s", r.code, r.body)
		}
		if !strings.HasPrefix(r.header.Get("Www-Authenticate"), "Bearer") {
			t.Fatalf("no Bearer challenge: %v", r.header)
		}
		if s.upstreamCount() != before {
			t.Fatal("an unauthenticated request reached the runner")
		}
	})

	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	forger, err := jwk.FromRaw(otherKey)
	if err != nil {
		t.Fatal(err)
	}
	_ = forger.Set(jwk.KeyIDKey, s.signingKey.KeyID()) // claims to be the trusted key
	badSig, err := devtoken.Mint(forger, devtoken.Claims{Issuer: issuer, Audience: []string{audience}, Tenant: "acme", Subject: "mallory", Roles: []string{"admin"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, token, reason string
	}{
		{"bad signature", badSig, "bad_signature"},
		{"expired", s.token(devtoken.Claims{Tenant: "acme", Subject: "alice", Roles: []string{"admin"}, Now: time.Now().Add(-3 * time.Hour), TTL: time.Hour}), "expired"},
		{"wrong audience", s.token(devtoken.Claims{Audience: []string{"someone-else"}, Tenant: "acme", Subject: "alice", Roles: []string{"admin"}}), "wrong_audience"},
		{"garbage", "not.a.jwt", "malformed"},
	} {
		t.Run(tc.name+" is 401", func(t *testing.T) {
			r := s.mustDo("acme.localhost", tc.token, nil)
			if r.code != 401 {
				t.Fatalf("got %d: %s", r.code, r.body)
			}
			if !strings.Contains(r.body+r.header.Get("Www-Authenticate"), tc.reason) {
				t.Fatalf("401 does not name the reason %q: %s / %s", tc.reason, r.header.Get("Www-Authenticate"), r.body)
			}
		})
	}

	t.Run("denied role is 403", func(t *testing.T) {
		before := s.upstreamCount()
		tok := s.token(devtoken.Claims{Tenant: "acme", Subject: "bob", Roles: []string{"viewer"}})
		r := s.mustDo("acme.localhost", tok, nil)
		if r.code != 403 {
			t.Fatalf("got %d: %s", r.code, r.body)
		}
		if s.upstreamCount() != before {
			t.Fatal("a denied request reached the runner")
		}
	})

	t.Run("forged identity headers never reach the runner", func(t *testing.T) {
		before := s.upstreamCount()
		r := s.mustDo("acme.localhost", alice, map[string]string{
			"x-kailash-user": "admin", "x-kailash-roles": "admin", "x-kailash-tenant": "globex", "X-Kailash-Debug": "1",
		})
		if r.code != 200 {
			t.Fatalf("got %d: %s", r.code, r.body)
		}
		if m := r.json(t); m["user"] != "alice" || m["tenant"] != "acme" {
			t.Fatalf("runner believed a forged header: %s", r.body)
		}
		s.mu.Lock()
		seen := s.upstream[before:]
		s.mu.Unlock()
		if len(seen) != 1 {
			t.Fatalf("runner saw %d requests, want 1", len(seen))
		}
		h := seen[0]
		if got := h.Values("X-Kailash-User"); len(got) != 1 || got[0] != "alice" {
			t.Fatalf("x-kailash-user at the runner: %q", got)
		}
		if got := h.Values("X-Kailash-Roles"); len(got) != 1 || got[0] != "business_user" {
			t.Fatalf("x-kailash-roles at the runner: %q", got)
		}
		if got := h.Values("X-Kailash-Tenant"); len(got) != 1 || got[0] != "acme" {
			t.Fatalf("x-kailash-tenant at the runner: %q", got)
		}
		if h.Get("X-Kailash-Debug") != "" {
			t.Fatal("a client-sent x-kailash-* header reached the runner")
		}
	})

	t.Run("host names are case-insensitive, and authorized all the same", func(t *testing.T) {
		// With per-tenant routes a filter lowercases the host after the
		// stream started: ext_authz must still run for the tenant it then
		// routes to (it once did not: a filter disabled by default stayed
		// disabled for a host first seen without a route).
		for _, host := range []string{"ACME.localhost", "Acme.Localhost"} {
			before := s.upstreamCount()
			if r := s.mustDo(host, "", nil); r.code != 401 || !strings.Contains(r.body, "missing_token") {
				t.Fatalf("%s without a token: %d %s", host, r.code, r.body)
			}
			if s.upstreamCount() != before {
				t.Fatalf("%s: an unauthenticated request reached the runner", host)
			}
			if r := s.mustDo(host, alice, nil); r.code != 200 || r.json(t)["tenant"] != "acme" {
				t.Fatalf("%s with alice's token: %d %s", host, r.code, r.body)
			}
		}
	})
	t.Run("tenant A's token on tenant B's domain is refused", func(t *testing.T) {
		r := s.mustDo("globex.localhost", alice, nil)
		if r.code != 401 && r.code != 403 {
			t.Fatalf("got %d: %s", r.code, r.body)
		}
		globexTok := s.token(devtoken.Claims{Tenant: "globex", Subject: "gina", Roles: []string{"business_user"}})
		if r := s.mustDo("globex.localhost", globexTok, nil); r.code != 200 || r.json(t)["tenant"] != "globex" {
			t.Fatalf("globex's own token: %d %s", r.code, r.body)
		}
	})

	t.Run("the runner refuses requests that bypass Envoy", func(t *testing.T) {
		s.mu.Lock()
		last := s.upstream[len(s.upstream)-1]
		s.mu.Unlock()
		if last.Get("X-Kailash-Identity") == "" {
			t.Error("requests through Envoy carry no x-kailash-identity")
		}
		forged := s.token(devtoken.Claims{Audience: []string{"kailash-runner"}, Tenant: "acme", Subject: "mallory", Roles: []string{"admin"}})
		for name, h := range map[string]map[string]string{
			"identity headers only":        {"x-kailash-tenant": "acme", "x-kailash-user": "mallory", "x-kailash-roles": "admin"},
			"identity token not ours":      {"x-kailash-identity": forged, "x-kailash-tenant": "acme", "x-kailash-user": "mallory"},
			"identity token unsigned junk": {"x-kailash-identity": "e30.e30.", "x-kailash-user": "mallory"},
		} {
			req, _ := http.NewRequest("POST", "http://"+s.ports.runner+"/v1/workflows/hello/executions", strings.NewReader(`{}`))
			for k, v := range h {
				req.Header.Set(k, v)
			}
			resp, err := s.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s: runner answered %d, want 401", name, resp.StatusCode)
			}
		}
	})

	t.Run("unknown host is 404 and never authorized", func(t *testing.T) {
		if r := s.mustDo("nobody.localhost", alice, nil); r.code != 404 || r.body != wire.UnknownHostBody {
			t.Fatalf("got %d: %s", r.code, r.body)
		}
	})

	t.Run("servers expose metrics and health", func(t *testing.T) {
		for _, addr := range []string{s.ports.xdsHTTP, s.ports.authzHTTP, s.ports.runner} {
			for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
				resp, err := http.Get("http://" + addr + path)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("%s%s: %d", addr, path, resp.StatusCode)
				}
			}
		}
	})

	pid := s.proc.Pid()
	initech := s.token(devtoken.Claims{Tenant: "initech", Subject: "ivan", Roles: []string{"business_user"}})

	t.Run("a tenant added to the watched file is routable within 2s, Envoy not restarted", func(t *testing.T) {
		if r := s.mustDo("initech.localhost", initech, nil); r.code != 404 {
			t.Fatalf("before the edit: got %d", r.code)
		}
		writeConfig(t, s.cfgPath, configYAML(t, s.ports, "acme", "globex", "initech"))
		edited := time.Now()
		testenv.Eventually(t, 2*time.Second, func() error {
			r, err := s.do("initech.localhost", initech, nil)
			if err != nil {
				return err
			}
			if r.code != 200 {
				return fmt.Errorf("initech: %d %s", r.code, r.body)
			}
			return nil
		})
		t.Logf("new tenant served %s after the edit", time.Since(edited).Round(time.Millisecond))
		if s.proc.Pid() != pid {
			t.Fatal("envoy was restarted")
		}
		select {
		case <-s.proc.Done():
			t.Fatal("envoy exited")
		default:
		}
	})

	t.Run("an invalid file leaves the last good tenants serving", func(t *testing.T) {
		good := configYAML(t, s.ports, "acme", "globex", "initech")
		for _, bad := range []string{
			// a semantic error: tenant hooli claims acme's domain
			good + strings.Replace(tenantYAML(t, "hooli"), "[hooli.localhost]", "[hooli.localhost, acme.localhost]", 1),
			// a syntax error: an unknown key
			strings.Replace(good, "tenants:\n", "tenants:\n  - id: hooli\n    domains: [hooli.localhost]\n    colour: red\n", 1),
		} {
			writeConfig(t, s.cfgPath, bad)
			time.Sleep(time.Second) // longer than the watcher's debounce and a push
			for _, c := range []struct{ host, tok string }{{"acme.localhost", alice}, {"initech.localhost", initech}} {
				if r := s.mustDo(c.host, c.tok, nil); r.code != 200 {
					t.Fatalf("%s after a bad edit: %d %s", c.host, r.code, r.body)
				}
			}
		}
		hooli := s.token(devtoken.Claims{Tenant: "hooli", Subject: "h", Roles: []string{"admin"}})
		if r := s.mustDo("hooli.localhost", hooli, nil); r.code != 404 {
			t.Fatalf("a tenant from the rejected file is served: %d", r.code)
		}
	})

	t.Run("with authz stopped Envoy refuses and never forwards", func(t *testing.T) {
		s.stopAuthz()
		if err := <-s.authzDone; err != nil {
			t.Fatalf("authz stopped with %v", err)
		}
		s.authzDone <- nil // for cleanup
		before := s.upstreamCount()
		r := s.mustDo("acme.localhost", alice, nil)
		if r.code != 503 && r.code != 403 {
			t.Fatalf("got %d: %s", r.code, r.body)
		}
		if r.code != 503 {
			t.Errorf("want 503 (status_on_error), got %d", r.code)
		}
		if s.upstreamCount() != before {
			t.Fatal("a request reached the runner while authz was down")
		}
	})
}

var curlRe = regexp.MustCompile(`curl -sS -H 'Host: ([^']+)' -H 'Authorization: Bearer ([^']+)' -H 'Content-Type: application/json' -d '([^']*)' (http://\S+)`)

// TestUpServesThePrintedCurl runs `kailash up` as `make run` does and sends
// the request it prints; cancelling (Ctrl-C) stops everything, Envoy included.
func TestUpServesThePrintedCurl(t *testing.T) {
	envoytest.Binary(t)
	p := freePorts(t)
	path := filepath.Join(t.TempDir(), "kailash.yaml")
	writeConfig(t, path, configYAML(t, p, "acme"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &testenv.LogBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"up", "-c", path, "-log-level", "warn", "-dev-key", abs(t, "../../examples/keys/dev-signing-key.pem")}, out)
	}()
	var m []string
	testenv.Eventually(t, 90*time.Second, func() error {
		select {
		case err := <-done:
			t.Fatalf("kailash up exited: %v\n%s", err, out)
		default:
		}
		if m = curlRe.FindStringSubmatch(out.String()); m == nil {
			return errors.New("no curl line printed yet")
		}
		return nil
	})
	req, _ := http.NewRequest("POST", m[4], strings.NewReader(m[3]))
	req.Host = m[1]
	req.Header.Set("Authorization", "Bearer "+m[2])
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"user":"alice"`) {
		t.Fatalf("printed curl: %d %s", resp.StatusCode, body)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("kailash up: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("kailash up did not stop within 30s of Ctrl-C")
	}
	for _, addr := range []string{p.envoy, p.admin, p.authz, p.runner, p.xds} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after up returned", addr)
		}
	}
}
