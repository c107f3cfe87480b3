package extauthz

import (
	"strings"
	"testing"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/wire"
)

// authz.tenant_from host: for Istio's CUSTOM provider and Envoy Gateway's
// extAuth, whose ext_authz filter sets no context_extensions, the tenant is
// the one whose domains hold the request's host (exact, port stripped,
// lowercased); a route's context_extensions tenant still wins.
func TestTenantFromHost(t *testing.T) {
	cfg := testConfig(t)
	cfg.Authz.TenantFrom = config.TenantFromHost
	if err := cfg.Validate(); err != nil && strings.Contains(err.Error(), "tenant_from") {
		t.Fatal(err)
	}
	r := startServer(t, cfg)
	ctx := t.Context()
	key := devKey(t)
	alice := mint(t, key, claims(nil)) // acme
	bob := mint(t, key, claims(func(c *devtoken.Claims) { c.Tenant, c.Subject = "globex", "bob" }))
	check := func(t *testing.T, ext, host, token string) (tenant string, status int, body string) {
		t.Helper()
		req := checkReq(ext, "POST", "/v1/workflows/etl/executions", token, nil)
		req.Attributes.Request.Http.Host = host
		resp, err := r.client.Check(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if ok := resp.GetOkResponse(); ok != nil {
			return headerMap(t, ok.GetHeaders())[wire.HeaderTenant], 200, ""
		}
		d := resp.GetDeniedResponse()
		return "", int(d.GetStatus().GetCode()), d.GetBody()
	}
	t.Run("host of tenant A gets A", func(t *testing.T) {
		if tn, st, _ := check(t, "", "ACME.localhost:8443", alice); st != 200 || tn != "acme" {
			t.Fatalf("got %d tenant %q", st, tn)
		}
		if tn, st, _ := check(t, "", "globex.localhost", bob); st != 200 || tn != "globex" {
			t.Fatalf("got %d tenant %q", st, tn)
		}
	})
	t.Run("A's token on B's host is B's decision", func(t *testing.T) {
		if _, st, _ := check(t, "", "globex.localhost", alice); st != 401 {
			t.Fatalf("acme token on globex host: %d", st)
		}
	})
	t.Run("unknown host", func(t *testing.T) {
		for _, h := range []string{"evil.localhost", "acme.localhost.evil", "", "x.acme.localhost"} {
			if _, st, body := check(t, "", h, alice); st != 404 || body != wire.UnknownHostBody {
				t.Fatalf("host %q: %d %q", h, st, body)
			}
		}
	})
	t.Run("context_extensions wins", func(t *testing.T) {
		if tn, st, _ := check(t, "acme", "globex.localhost", alice); st != 200 || tn != "acme" {
			t.Fatalf("got %d tenant %q", st, tn)
		}
	})
}

// Default (context_extensions): the host names no tenant.
func TestTenantFromDefaultIgnoresHost(t *testing.T) {
	r := startServer(t, testConfig(t))
	req := checkReq("", "GET", "/", mint(t, devKey(t), claims(nil)), nil)
	req.Attributes.Request.Http.Host = "acme.localhost"
	resp, err := r.client.Check(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if d := resp.GetDeniedResponse(); d.GetStatus().GetCode() != 404 || d.GetBody() != wire.UnknownHostBody {
		t.Fatalf("got %v", resp)
	}
}
