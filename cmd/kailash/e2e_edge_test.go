package main

// End-to-end tests of the tenant edge features through a real Envoy: IP
// allowlist before ext_authz, CORS preflights, inactive tenants, the local
// token bucket, per-user global quotas through our rate-limit service on a
// real Redis, and the fail mode when Redis dies.

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// edgeStack is the whole product with the rate-limit service on Redis.
type edgeStack struct {
	*stack
	redis *testenv.Redis
	admin string // Envoy admin address
}

func edgeConfigYAML(t testing.TB, p ports, rls, redisAddr string) string {
	jwt := fmt.Sprintf(`    jwt: {issuer: %s, audiences: [%s], jwks_file: %s}
`, issuer, audience, abs(t, "../../examples/keys/dev.jwks.json"))
	return fmt.Sprintf(`envoy: {listen: %s, admin: %s, node_id: e2e-edge}
xds: {grpc: %s, http: %s}
authz: {grpc: %s, http: %s, timeout: 2s, max_request_bytes: 8192}
runner: {http: %s, workflows: %s}
ratelimit:
  grpc: %s
  backend: redis
  redis: {addr: %s}
  fail_mode: closed
  timeout: 500ms
tenants:
  - id: acme
    domains: [acme.localhost]
    cors:
      allow_origins: [https://app.acme.test]
      allow_methods: [POST]
      allow_headers: [authorization, content-type]
      max_age: 1m
    limits: {per_user_per_hour: 3}
`+jwt+`  - id: walled
    domains: [walled.localhost]
    ip_allowlist: [10.99.0.0/16]
`+jwt+`  - id: burst
    domains: [burst.localhost]
    limits: {requests_per_second: 1, burst: 3}
`+jwt+`  - id: dormant
    domains: [dormant.localhost]
    active: false
`+jwt, p.envoy, p.admin, p.xds, p.xdsHTTP, p.authz, p.authzHTTP, p.runner,
		abs(t, "../../examples/workflows"), rls, redisAddr)
}

func startEdgeStack(t *testing.T) *edgeStack {
	t.Helper()
	rd := testenv.StartRedis(t)
	p := freePorts(t)
	s := startStackWith(t, stackOptions{ports: p, body: edgeConfigYAML(t, p, testenv.FreeAddr(t), rd.Addr)})
	return &edgeStack{stack: s, redis: rd, admin: s.admin}
}

// stat reads one Envoy counter (0 when absent).
func (e *edgeStack) stat(name string) int {
	e.t.Helper()
	resp, err := http.Get("http://" + e.admin + "/stats?filter=^" + strings.ReplaceAll(name, ".", `\.`) + "$")
	if err != nil {
		e.t.Fatal(err)
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

// send is a request through Envoy with any method and headers.
func (e *edgeStack) send(method, host string, h map[string]string) reply {
	e.t.Helper()
	req, err := http.NewRequest(method, "http://"+e.ports.envoy+"/v1/workflows/hello/executions", strings.NewReader(`{"order": 42}`))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Host = host
	req.Header.Set("Content-Type", "application/json")
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(b)}
}

func TestEdgeEndToEnd(t *testing.T) {
	e := startEdgeStack(t)
	tok := func(tenant, sub string) string {
		return e.token(devtoken.Claims{Tenant: tenant, Subject: sub, Roles: []string{"business_user"}})
	}
	bearer := func(tenant, sub string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + tok(tenant, sub)}
	}

	t.Run("ip allowlist refuses before ext_authz", func(t *testing.T) {
		before := e.stat("cluster.kailash_authz.upstream_rq_total")
		r := e.send("POST", "walled.localhost", bearer("walled", "alice"))
		if r.code != 403 || !strings.Contains(r.body, "RBAC") {
			t.Fatalf("got %d: %s", r.code, r.body)
		}
		if after := e.stat("cluster.kailash_authz.upstream_rq_total"); after != before {
			t.Fatalf("ext_authz called %d times for a refused client", after-before)
		}
		if n := e.stat("http.ingress_http.rbac.denied"); n < 1 {
			t.Errorf("rbac denied stat %d", n)
		}
	})

	t.Run("inactive tenant refused at the edge", func(t *testing.T) {
		before := e.stat("cluster.kailash_authz.upstream_rq_total")
		r := e.send("POST", "dormant.localhost", bearer("dormant", "alice"))
		if r.code != 403 || !strings.Contains(r.body, "inactive") {
			t.Fatalf("got %d: %s", r.code, r.body)
		}
		if after := e.stat("cluster.kailash_authz.upstream_rq_total"); after != before {
			t.Fatal("ext_authz called for an inactive tenant")
		}
	})

	t.Run("cors preflight allowed", func(t *testing.T) {
		r := e.send("OPTIONS", "acme.localhost", map[string]string{
			"Origin": "https://app.acme.test", "Access-Control-Request-Method": "POST",
			"Access-Control-Request-Headers": "authorization",
		})
		if r.code != 200 || r.header.Get("Access-Control-Allow-Origin") != "https://app.acme.test" ||
			!strings.Contains(r.header.Get("Access-Control-Allow-Methods"), "POST") || r.header.Get("Access-Control-Max-Age") != "60" {
			t.Fatalf("got %d %v: %s", r.code, r.header, r.body)
		}
	})

	t.Run("cors preflight refused", func(t *testing.T) {
		r := e.send("OPTIONS", "acme.localhost", map[string]string{
			"Origin": "https://evil.test", "Access-Control-Request-Method": "POST",
		})
		if r.header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("evil origin allowed: %d %v", r.code, r.header)
		}
	})

	t.Run("local limit 429 after the burst", func(t *testing.T) {
		h := bearer("burst", "alice")
		var codes []int
		var last reply
		for range 6 {
			last = e.send("POST", "burst.localhost", h)
			codes = append(codes, last.code)
		}
		ok := 0
		for _, c := range codes[:3] {
			if c == 200 {
				ok++
			}
		}
		if ok != 3 || last.code != 429 {
			t.Fatalf("codes %v (burst 3, then 429)", codes)
		}
		if last.header.Get("X-Ratelimit-Limit") == "" || last.header.Get("X-Ratelimit-Remaining") != "0" {
			t.Errorf("429 without x-ratelimit headers: %v", last.header)
		}
	})

	t.Run("per-user hourly quota is that user's only", func(t *testing.T) {
		carol := bearer("acme", "carol")
		for i := range 3 {
			if r := e.send("POST", "acme.localhost", carol); r.code != 200 {
				t.Fatalf("carol call %d: %d %s", i+1, r.code, r.body)
			}
		}
		r := e.send("POST", "acme.localhost", carol)
		if r.code != 429 {
			t.Fatalf("carol's 4th call: %d %s", r.code, r.body)
		}
		if r.header.Get("X-Ratelimit-Limit") == "" {
			t.Errorf("429 without x-ratelimit headers: %v", r.header)
		}
		if r := e.send("POST", "acme.localhost", bearer("acme", "dan")); r.code != 200 {
			t.Fatalf("dan limited by carol's quota: %d %s", r.code, r.body)
		}
	})

	t.Run("redis down: fail closed quickly", func(t *testing.T) {
		e.redis.Stop()
		defer e.redis.Start()
		h := bearer("acme", "erin")
		var worst time.Duration
		for range 5 {
			start := time.Now()
			r := e.send("POST", "acme.localhost", h)
			took := time.Since(start)
			worst = max(worst, took)
			if r.code != 503 {
				t.Fatalf("with Redis down and fail_mode closed: %d %s", r.code, r.body)
			}
		}
		t.Logf("worst request time through Envoy with Redis down: %s", worst)
		if worst > 50*time.Millisecond {
			t.Errorf("worst %s: the fail mode must apply within 50ms", worst)
		}
	})
}
