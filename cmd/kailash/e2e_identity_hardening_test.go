package main

import (
	"strings"
	"testing"

	"github.com/kailash-gw/kailash/internal/devtoken"
)

// TestTenantClaimRequiredEndToEnd: acme and globex trust the same issuer and
// audience, so a token without a tenant claim would be accepted by both
// (before require_tenant_claim, it was: 200 on either domain). Through
// Envoy it is now 401 missing_tenant_claim on both, and a token naming its
// tenant still serves there and only there.
func TestTenantClaimRequiredEndToEnd(t *testing.T) {
	s := startStack(t, "acme", "globex")
	anyTenant := s.token(devtoken.Claims{Subject: "mallory", Roles: []string{"business_user"}})
	for _, host := range []string{"acme.localhost", "globex.localhost"} {
		r := s.mustDo(host, anyTenant, nil)
		if r.code != 401 {
			t.Fatalf("%s: a token without a tenant claim got %d, want 401: %s", host, r.code, r.body)
		}
		if !strings.Contains(r.body+r.header.Get("Www-Authenticate"), "missing_tenant_claim") {
			t.Fatalf("%s: 401 does not name missing_tenant_claim: %s / %s", host, r.header.Get("Www-Authenticate"), r.body)
		}
	}
	acme := s.token(devtoken.Claims{Tenant: "acme", Subject: "alice", Roles: []string{"business_user"}})
	if r := s.mustDo("acme.localhost", acme, nil); r.code != 200 {
		t.Fatalf("acme's own token got %d: %s", r.code, r.body)
	}
	if r := s.mustDo("globex.localhost", acme, nil); r.code != 401 {
		t.Fatalf("acme's token on globex got %d, want 401", r.code)
	}
}
