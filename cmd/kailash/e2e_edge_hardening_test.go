package main

// End-to-end tests of the edge hardening through a real Envoy (issue 16):
// quotas built only from what ext_authz set, the login endpoints' own
// per-IP quota, underscored headers refused, the identity token kept from
// tenants' own upstreams, a slow-header client cut off, and the listener's
// connection cap.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// hardeningStack is the product with the rate-limit service (memory) and a
// tenant ("own") whose upstream is a test server recording headers.
type hardeningStack struct {
	*stack
	mu  sync.Mutex
	own []http.Header // headers of every request that reached the tenant's own upstream
}

func hardeningConfigYAML(t testing.TB, p ports, rls, ownAddr string) string {
	jwt := fmt.Sprintf("    jwt: {issuer: %s, audiences: [%s], jwks_file: %s}\n",
		issuer, audience, abs(t, "../../examples/keys/dev.jwks.json"))
	return fmt.Sprintf(`envoy:
  listen: %s
  admin: %s
  node_id: e2e-hardening
  listener: {request_headers_timeout: 1s, max_connections: 4}
xds: {grpc: %s, http: %s}
authz: {grpc: %s, http: %s, timeout: 2s, max_request_bytes: 8192}
runner: {http: %s, workflows: %s, identity_jwks: "http://%s/auth/.well-known/jwks.json", identity_audience: kailash-runner}
ratelimit: {grpc: %s, fail_mode: closed, timeout: 500ms}
tenants:
  - id: quota
    domains: [quota.localhost]
    limits: {max_api_calls_per_day: 5, per_role_per_hour: {admin: 2}}
`+jwt+`  - id: login
    domains: [login.localhost]
    limits: {auth_per_minute: 3}
`+jwt+`  - id: own
    domains: [own.localhost]
    upstreams: [%s]
`+jwt+`  - id: plain
    domains: [plain.localhost]
`+jwt+`  - id: nozip
    domains: [nozip.localhost]
    compression: false
`+jwt, p.envoy, p.admin, p.xds, p.xdsHTTP, p.authz, p.authzHTTP, p.runner,
		abs(t, "../../examples/workflows"), p.authzHTTP, rls, ownAddr)
}

func startHardeningStack(t *testing.T) *hardeningStack {
	t.Helper()
	h := &hardeningStack{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.own = append(h.own, r.Header.Clone())
		h.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(up.Close)
	p := freePorts(t)
	h.stack = startStackWith(t, stackOptions{ports: p,
		body: hardeningConfigYAML(t, p, testenv.FreeAddr(t), strings.TrimPrefix(up.URL, "http://"))})
	return h
}

// call is one request through Envoy with client c.
func (h *hardeningStack) call(c *http.Client, method, host, path, token string, hdr map[string]string) reply {
	h.t.Helper()
	var body io.Reader
	if method == "POST" {
		body = strings.NewReader(`{"order": 42}`)
	}
	req, err := http.NewRequest(method, "http://"+h.ports.envoy+path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Host = host
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header[k] = []string{v} // as given: no canonicalisation
	}
	resp, err := c.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(b)}
}

// adminStat reads one Envoy counter or gauge (0 when absent).
func (h *hardeningStack) adminStat(name string) int {
	h.t.Helper()
	resp, err := http.Get("http://" + h.admin + "/stats?filter=^" + strings.ReplaceAll(name, ".", `\.`) + "$")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok && k == name {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// clientFrom is an HTTP client whose connections come from local IP ip
// (any 127.0.0.0/8 address works on loopback).
func clientFrom(t *testing.T, ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestEdgeHardeningEndToEnd(t *testing.T) {
	h := startHardeningStack(t)
	tok := func(tenant, sub string, roles ...string) string {
		return h.token(devtoken.Claims{Tenant: tenant, Subject: sub, Roles: roles})
	}
	const jwks = "/auth/.well-known/jwks.json"
	const run = "/v1/workflows/hello/executions"

	// Bypass 5: before, the role descriptor came from the client's own
	// x-kailash-roles on /auth/ (no ext_authz), and /auth/ counted
	// against the tenant's day quota.
	t.Run("anonymous login requests drain no tenant, user or role quota", func(t *testing.T) {
		spoof := map[string]string{"x-kailash-roles": "admin", "x-kailash-user": "admin"}
		for i := range 8 {
			if r := h.call(h.client, "GET", "quota.localhost", jwks, "", spoof); r.code != 200 {
				t.Fatalf("anonymous login request %d: %d %s", i+1, r.code, r.body)
			}
		}
		admin := tok("quota", "root", "admin")
		for i := range 2 {
			if r := h.call(h.client, "POST", "quota.localhost", run, admin, nil); r.code != 200 {
				t.Fatalf("admin call %d after 8 anonymous login requests: %d %s (quotas drained by anonymous requests)", i+1, r.code, r.body)
			}
		}
		// The role quota still holds, from ext_authz's metadata.
		if r := h.call(h.client, "POST", "quota.localhost", run, admin, nil); r.code != 429 {
			t.Fatalf("admin's 3rd call (admin quota 2/hour): %d %s", r.code, r.body)
		}
		// A non-admin claiming admin by header is not counted as admin.
		if r := h.call(h.client, "POST", "quota.localhost", run, tok("quota", "bob", "business_user"), spoof); r.code != 200 {
			t.Fatalf("business_user with a forged x-kailash-roles: admin: %d %s", r.code, r.body)
		}
	})

	t.Run("login endpoints have their own quota per client IP", func(t *testing.T) {
		for i := range 3 {
			if r := h.call(h.client, "GET", "login.localhost", jwks, "", nil); r.code != 200 {
				t.Fatalf("login request %d: %d %s", i+1, r.code, r.body)
			}
		}
		r := h.call(h.client, "GET", "login.localhost", jwks, "", map[string]string{"X-Forwarded-For": "203.0.113.9"})
		if r.code != 429 {
			t.Fatalf("4th login request from the same IP (auth_per_minute 3; a forged X-Forwarded-For must not matter): %d %s", r.code, r.body)
		}
		if r := h.call(clientFrom(t, "127.0.0.2"), "GET", "login.localhost", jwks, "", nil); r.code != 200 {
			t.Fatalf("login request from another IP: %d %s", r.code, r.body)
		}
		// The login quota is the login endpoints' only: API calls pass.
		if r := h.call(h.client, "POST", "login.localhost", run, tok("login", "alice", "business_user"), nil); r.code != 200 {
			t.Fatalf("API call after the login quota ran out: %d %s", r.code, r.body)
		}
	})

	t.Run("underscored x_kailash headers never reach the runner", func(t *testing.T) {
		before := h.upstreamCount()
		r := h.call(h.client, "POST", "plain.localhost", run, tok("plain", "alice", "business_user"),
			map[string]string{"x_kailash_user": "mallory", "x_kailash_roles": "admin"})
		h.mu.Lock()
		for _, hd := range h.stack.upstream[before:] {
			for k := range hd {
				if strings.Contains(k, "_") {
					t.Errorf("runner received %s: %v", k, hd[k])
				}
			}
		}
		h.mu.Unlock()
		if r.code != 400 {
			t.Fatalf("request with underscored headers: %d %s (want 400: refused)", r.code, r.body)
		}
		if n := h.upstreamCount(); n != before {
			t.Fatalf("%d requests reached the runner", n-before)
		}
	})

	t.Run("identity token goes to the runner only", func(t *testing.T) {
		before := h.upstreamCount()
		if r := h.call(h.client, "POST", "plain.localhost", run, tok("plain", "alice", "business_user"), nil); r.code != 200 {
			t.Fatalf("runner call: %d %s", r.code, r.body)
		}
		h.stack.mu.Lock()
		got := h.stack.upstream[before:]
		h.stack.mu.Unlock()
		if len(got) != 1 || got[0].Get("X-Kailash-Identity") == "" {
			t.Fatalf("the runner did not receive the identity token: %v", got)
		}
		if r := h.call(h.client, "POST", "own.localhost", run, tok("own", "alice", "business_user"),
			map[string]string{"x-kailash-identity": "forged"}); r.code != 200 {
			t.Fatalf("tenant upstream call: %d %s", r.code, r.body)
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		if len(h.own) != 1 {
			t.Fatalf("tenant upstream got %d requests", len(h.own))
		}
		if h.own[0].Get("X-Kailash-User") != "alice" {
			t.Errorf("tenant upstream without ext_authz's x-kailash-user: %v", h.own[0])
		}
		if v := h.own[0].Values("X-Kailash-Identity"); len(v) > 0 {
			t.Fatalf("tenant upstream received x-kailash-identity %q: it could replay it to the runner", v)
		}
	})

	t.Run("compression is a per-tenant setting", func(t *testing.T) {
		gz := map[string]string{"Accept-Encoding": "gzip"}
		if r := h.call(h.client, "POST", "plain.localhost", run, tok("plain", "alice", "business_user"), gz); r.code != 200 || r.header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("plain (compression on): %d, content-encoding %q", r.code, r.header.Get("Content-Encoding"))
		}
		if r := h.call(h.client, "POST", "nozip.localhost", run, tok("nozip", "alice", "business_user"), gz); r.code != 200 || r.header.Get("Content-Encoding") != "" {
			t.Fatalf("nozip (compression: false): %d, content-encoding %q", r.code, r.header.Get("Content-Encoding"))
		}
	})

	t.Run("slow header client is cut off", func(t *testing.T) {
		c, err := net.Dial("tcp", h.ports.envoy)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cut := make(chan string, 1)
		go func() {
			b, _ := io.ReadAll(bufio.NewReader(c)) // until Envoy closes
			cut <- string(b)
		}()
		if _, err := io.WriteString(c, "GET /v1/workflows HTTP/1.1\r\nHost: plain.localhost\r\nX-Slow: "); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		// One byte every 200ms for 15s: the headers never end, and the
		// stream is never idle (request_headers_timeout is 1s).
		for time.Since(start) < 15*time.Second {
			select {
			case got := <-cut:
				t.Logf("cut off after %s: %q", time.Since(start).Round(time.Millisecond), firstLine(got))
				if got != "" && !strings.HasPrefix(got, "HTTP/1.1 408") {
					t.Errorf("answer %q, want 408 or a plain close", firstLine(got))
				}
				return
			case <-tick.C:
				if _, err := c.Write([]byte("a")); err != nil {
					t.Logf("write after %s: %v", time.Since(start), err)
				}
			}
		}
		t.Fatal("a client sending headers one byte per 200ms was still connected after 15s")
	})

	t.Run("connection cap per listener", func(t *testing.T) {
		h.client.CloseIdleConnections()
		const active = "connection_limit.ingress_http.active_connections"
		waitStat(t, h, active, func(n int) bool { return n == 0 })
		var open []net.Conn
		defer func() {
			for _, c := range open {
				c.Close()
			}
		}()
		for range 4 {
			c, err := net.Dial("tcp", h.ports.envoy)
			if err != nil {
				t.Fatal(err)
			}
			open = append(open, c)
		}
		waitStat(t, h, active, func(n int) bool { return n == 4 })
		extra, err := net.Dial("tcp", h.ports.envoy)
		if err != nil {
			t.Fatal(err)
		}
		defer extra.Close()
		extra.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(extra, "GET / HTTP/1.1\r\nHost: plain.localhost\r\n\r\n"); err == nil {
			b, rerr := io.ReadAll(extra)
			if ne, ok := rerr.(net.Error); ok && ne.Timeout() {
				t.Fatal("a 5th connection over max_connections 4 stayed open")
			}
			if len(b) > 0 {
				t.Fatalf("a 5th connection over max_connections 4 was served: %q", firstLine(string(b)))
			}
		}
		if n := h.adminStat("connection_limit.ingress_http.limited_connections"); n < 1 {
			t.Errorf("limited_connections %d", n)
		}
		for _, c := range open {
			c.Close()
		}
		open = nil
		waitStat(t, h, active, func(n int) bool { return n == 0 })
		if r := h.call(h.client, "POST", "plain.localhost", run, tok("plain", "alice", "business_user"), nil); r.code != 200 {
			t.Fatalf("after the connections closed: %d %s", r.code, r.body)
		}
	})
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\r\n")
	return l
}

// waitStat polls an Envoy stat until ok (generous deadline: a loaded box).
func waitStat(t *testing.T, h *hardeningStack, name string, ok func(int) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		n := h.adminStat(name)
		if ok(n) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s stayed %d", name, n)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
