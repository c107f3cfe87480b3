package extauthz

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/wire"
)

type running struct {
	srv    *Server
	client authv3.AuthorizationClient
	conn   *grpc.ClientConn
	stop   func()
}

// startServer runs a server on 127.0.0.1:0 until the test ends, and checks
// Serve returns nil after cancellation.
func startServer(t *testing.T, cfg *config.Config) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(ctx, cfg, Options{Now: fixedClock})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	return serve(t, ctx, cancel, srv)
}

// serve runs srv until the test ends (or stop is called) and checks Serve
// returns nil after cancellation.
func serve(t *testing.T, ctx context.Context, cancel context.CancelFunc, srv *Server) *running {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			conn.Close()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve returned %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Serve did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return &running{srv: srv, client: authv3.NewAuthorizationClient(conn), conn: conn, stop: stop}
}

func checkReq(tenant, method, path, token string, extra map[string]string) *authv3.CheckRequest {
	h := map[string]string{":method": method, ":path": path}
	if token != "" {
		h["authorization"] = "Bearer " + token
	}
	for k, v := range extra {
		h[k] = v
	}
	ext := map[string]string{}
	if tenant != "" {
		ext["tenant"] = tenant
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		ContextExtensions: ext,
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Host: tenant + ".localhost", Headers: h,
		}},
	}}
}

func TestServerCheck(t *testing.T) {
	r := startServer(t, testConfig(t))
	ctx := t.Context()
	key := devKey(t)
	user := mint(t, key, claims(nil)) // business_user of acme

	t.Run("allow", func(t *testing.T) {
		resp, err := r.client.Check(ctx, checkReq("acme", "POST", "/v1/workflows/etl/executions", user,
			map[string]string{"x-kailash-user": "root", "x-kailash-roles": "admin", "x-kailash-sudo": "1"}))
		if err != nil {
			t.Fatal(err)
		}
		ok := resp.GetOkResponse()
		if ok == nil {
			t.Fatalf("not allowed: %v", resp)
		}
		h := headerMap(t, ok.GetHeaders())
		if h[wire.HeaderUser] != "alice" || h[wire.HeaderTenant] != "acme" || h[wire.HeaderRoles] != "business_user" ||
			h["x-kailash-permission"] != "workflow:execute" || !uuidV4.MatchString(h[wire.HeaderDecisionID]) {
			t.Fatalf("headers %v", h)
		}
		if rm := ok.GetHeadersToRemove(); !slices.Equal(rm, []string{"x-kailash-sudo"}) {
			t.Fatalf("headers_to_remove %v (forged x-kailash-user/roles are overwritten, others removed)", rm)
		}
		if md := resp.GetDynamicMetadata().AsMap(); md["user"] != "alice" || md["decision_id"] != h[wire.HeaderDecisionID] {
			t.Fatalf("metadata %v", md)
		}
	})
	t.Run("deny 403", func(t *testing.T) {
		resp, err := r.client.Check(ctx, checkReq("acme", "DELETE", "/v1/workflows/etl", user, nil))
		if err != nil {
			t.Fatal(err)
		}
		d := resp.GetDeniedResponse()
		if d.GetStatus().GetCode() != 403 || !strings.Contains(d.GetBody(), "missing permission workflow:delete") {
			t.Fatalf("deny: %v", resp)
		}
		if h := headerMap(t, d.GetHeaders()); !uuidV4.MatchString(h[wire.HeaderDecisionID]) {
			t.Fatalf("no decision id: %v", h)
		}
	})
	t.Run("no token 401", func(t *testing.T) {
		resp, err := r.client.Check(ctx, checkReq("acme", "GET", "/v1/workflows", "", nil))
		if err != nil {
			t.Fatal(err)
		}
		d := resp.GetDeniedResponse()
		if d.GetStatus().GetCode() != 401 || headerMap(t, d.GetHeaders())["www-authenticate"] != `Bearer realm="kailash"` {
			t.Fatalf("no token: %v", resp)
		}
	})
	t.Run("lowercase bearer scheme", func(t *testing.T) {
		req := checkReq("acme", "GET", "/v1/workflows", "", map[string]string{"authorization": "bearer " + user})
		resp, err := r.client.Check(ctx, req)
		if err != nil || resp.GetOkResponse() == nil {
			t.Fatalf("%v %v", resp, err)
		}
	})
	t.Run("token of another tenant 401", func(t *testing.T) {
		resp, err := r.client.Check(ctx, checkReq("globex", "GET", "/v1/workflows", user, nil))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(resp.GetDeniedResponse().GetBody(), "wrong_tenant") {
			t.Fatalf("%v", resp)
		}
	})
	t.Run("no route tenant: unknown host, whatever the headers say", func(t *testing.T) {
		// Envoy found no route (per-tenant routes: no scope for the host):
		// denied 404, even with a valid token and a forged tenant header.
		resp, err := r.client.Check(ctx, checkReq("", "GET", "/v1/workflows", user, map[string]string{"x-kailash-tenant": "acme"}))
		if err != nil {
			t.Fatal(err)
		}
		d := resp.GetDeniedResponse()
		if d.GetStatus().GetCode() != 404 || d.GetBody() != wire.UnknownHostBody || resp.GetOkResponse() != nil {
			t.Fatalf("want 404 %q, got %v", wire.UnknownHostBody, resp)
		}
	})
	t.Run("unknown tenant is a gRPC error", func(t *testing.T) {
		_, err := r.client.Check(ctx, checkReq("initech", "GET", "/v1/workflows", user, nil))
		if status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("want a gRPC error, got %v", err)
		}
	})
	t.Run("bad path 400", func(t *testing.T) {
		resp, err := r.client.Check(ctx, checkReq("acme", "GET", "/v1/%zz", user, nil))
		if err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 400 {
			t.Fatalf("%v %v", resp, err)
		}
	})
	t.Run("health", func(t *testing.T) {
		hr, err := healthpb.NewHealthClient(r.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: authv3.Authorization_ServiceDesc.ServiceName})
		if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("%v %v", hr, err)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		body := httpGet(t, "http://"+r.srv.HTTPAddr()+"/metrics")
		for _, want := range []string{
			`kailash_authz_checks_total{reason="policy",result="allow"}`,
			`kailash_authz_checks_total{reason="policy",result="deny"}`,
			`kailash_authz_checks_total{reason="missing_token",result="unauthenticated"}`,
			`kailash_authz_checks_total{reason="unknown_tenant",result="error"}`,
			`kailash_authz_checks_total{reason="unknown_host",result="deny"}`,
			`kailash_authz_check_duration_seconds_count`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
		if got := httpGet(t, "http://"+r.srv.HTTPAddr()+"/readyz"); got != "ready\n" {
			t.Errorf("readyz %q", got)
		}
	})
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestServerUpdate(t *testing.T) {
	cfg := testConfig(t)
	r := startServer(t, cfg)
	ctx := t.Context()
	tok := mint(t, devKey(t), claims(func(c *devtoken.Claims) { c.Tenant = "initech" }))

	bad := testConfig(t)
	bad.Tenants[0].JWT.JWKSFile = "/nonexistent/jwks.json"
	if err := r.srv.Update(bad); err == nil {
		t.Fatal("want an error for a missing JWKS file")
	}
	if body := httpGet(t, "http://"+r.srv.HTTPAddr()+"/metrics"); !strings.Contains(body, "kailash_authz_config_rejected_total 1") {
		t.Fatal("rejected config not counted")
	}
	// The last good config still serves acme.
	if resp, err := r.client.Check(ctx, checkReq("acme", "GET", "/v1/workflows", mint(t, devKey(t), claims(nil)), nil)); err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("after rejected update: %v %v", resp, err)
	}

	good := testConfig(t)
	good.Tenants = append(good.Tenants, config.Tenant{ID: "initech", Domains: []string{"initech.localhost"},
		JWT: config.JWT{Issuer: testIssuer, Audiences: []string{testAudience}, JWKSFile: jwksPath(t)}})
	good.SetDefaults()
	if err := r.srv.Update(good); err != nil {
		t.Fatal(err)
	}
	if resp, err := r.client.Check(ctx, checkReq("initech", "GET", "/v1/workflows", tok, nil)); err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("new tenant: %v %v", resp, err)
	}
}

func TestServerPolicyErrorsFailClosed(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) {
		if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("package p\nresult := {\"allowed\": \"yes\"} if input.parsed_path[0] == \"bad\"\nresult := true if input.parsed_path[0] == \"ok\"\n")
	cfg := testConfig(t)
	cfg.Policy = config.Policy{Bundle: dir, Decision: "p/result"}
	r := startServer(t, cfg)
	ctx := t.Context()
	tok := mint(t, devKey(t), claims(nil))

	if resp, err := r.client.Check(ctx, checkReq("acme", "GET", "/ok", tok, nil)); err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("ok: %v %v", resp, err)
	}
	if _, err := r.client.Check(ctx, checkReq("acme", "GET", "/bad", tok, nil)); status.Code(err) != codes.Internal {
		t.Fatalf("non-bool allowed: want Internal, got %v", err)
	}
	if _, err := r.client.Check(ctx, checkReq("acme", "GET", "/undefined", tok, nil)); status.Code(err) != codes.Internal {
		t.Fatalf("undefined: want Internal, got %v", err)
	}

	// Hot reload: a broken file keeps the last good policy; a good one swaps in.
	rev := r.srv.Engine().Revision()
	write("package p\nresult := \n")
	time.Sleep(600 * time.Millisecond)
	if r.srv.Engine().Revision() != rev {
		t.Fatal("broken bundle replaced the good one")
	}
	write("package p\nresult := false\n")
	deadline := time.Now().Add(5 * time.Second)
	for r.srv.Engine().Revision() == rev && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := r.client.Check(ctx, checkReq("acme", "GET", "/ok", tok, nil))
	if err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 403 {
		t.Fatalf("after hot reload: %v %v", resp, err)
	}
}

func TestNewFailsOnBadConfig(t *testing.T) {
	ctx := t.Context()
	cfg := testConfig(t)
	cfg.Policy.Decision = "kailash/authz/nope"
	if _, err := New(ctx, cfg, Options{}); err == nil || !strings.Contains(err.Error(), "no rule") {
		t.Fatalf("unknown decision: %v", err)
	}
	cfg = testConfig(t)
	cfg.Authz.GRPC = config.HostPortFromText("127.0.0.1:99999")
	if _, err := New(ctx, cfg, Options{}); err == nil {
		t.Fatal("bad address: want an error")
	}
	// Close releases a server that never served.
	cfg = testConfig(t)
	s, err := New(ctx, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCheckFailsClosedOnCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	srv, err := New(ctx, testConfig(t), Options{Now: fixedClock})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	resp, err := srv.Check(cctx, checkReq("acme", "GET", "/v1/workflows", mint(t, devKey(t), claims(nil)), nil))
	if resp != nil || status.Code(err) != codes.Canceled {
		t.Fatalf("cancelled request: resp=%v err=%v", resp, err)
	}
}

func TestServeStopsWithoutLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(ctx, testConfig(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := authv3.NewAuthorizationClient(conn).Check(t.Context(), checkReq("acme", "GET", "/", "", nil)); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines before, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

// The example config (relative jwks_file, embedded bundle) starts and answers.
func TestExampleConfig(t *testing.T) {
	cfg, err := config.Load("../examples/kailash.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Authz.GRPC, cfg.Authz.HTTP = config.MustHostPort("127.0.0.1:0"), config.HostPort{}
	r := startServer(t, cfg)
	tok := mint(t, devKey(t), claims(func(c *devtoken.Claims) { c.Tenant = "globex"; c.Roles = []string{"admin"} }))
	resp, err := r.client.Check(t.Context(), checkReq("globex", "DELETE", "/v1/workflows/x", tok, nil))
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("%v %v", resp, err)
	}
	if r.srv.HTTPAddr() != "" {
		t.Fatal("HTTPAddr without authz.http")
	}
}

// TestCheckHonoursTheCallersDeadline: a Check whose caller's deadline (as
// Envoy sends it) has passed fails closed, whether or not it is shorter
// than authz.timeout.
func TestCheckHonoursTheCallersDeadline(t *testing.T) {
	srv, err := New(t.Context(), testConfig(t), Options{Now: fixedClock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	req := checkReq("acme", "POST", "/v1/workflows/etl/executions", mint(t, devKey(t), claims(nil)), nil)
	for _, d := range []time.Duration{-time.Millisecond, -time.Hour} {
		ctx, cancel := context.WithDeadline(t.Context(), time.Now().Add(d))
		resp, err := srv.Check(ctx, req)
		cancel()
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("deadline %v ago: %v, %v; want DeadlineExceeded", -d, resp, err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute) // longer than authz.timeout
	defer cancel()
	if resp, err := srv.Check(ctx, req); err != nil || resp.GetOkResponse() == nil {
		t.Fatal(resp, err)
	}
}
