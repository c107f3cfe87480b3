package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func loadBody(t *testing.T, body string) (*Config, error) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "k.json"), []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "kailash.yaml")
	if err := os.WriteFile(p, []byte("envoy: {listen: 127.0.0.1:1}\nxds: {grpc: 127.0.0.1:2}\nauthz: {grpc: 127.0.0.1:3}\nrunner: {http: 127.0.0.1:4}\n"+body), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(p)
}

// require_tenant_claim defaults to true exactly when several tenants trust
// the token's issuer (through jwt or issuers[]); an explicit value wins.
func TestRequireTenantClaimDefault(t *testing.T) {
	c, err := loadBody(t, `tenants:
  - id: acme
    domains: [acme.test]
    jwt: {issuer: shared, audiences: [a], jwks_file: k.json}
  - id: globex
    domains: [globex.test]
    jwt: {issuer: own, audiences: [a], jwks_file: k.json}
    issuers: [{issuer: shared, audiences: [a], jwks_url: 'https://idp.test/keys'}]
  - id: initech
    domains: [initech.test]
    jwt: {issuer: shared, audiences: [a], jwks_file: k.json, require_tenant_claim: false}
  - id: hooli
    domains: [hooli.test]
    jwt: {issuer: alone, audiences: [a], jwks_file: k.json, require_tenant_claim: true}
`)
	if err != nil {
		t.Fatal(err)
	}
	get := func(b *bool) string {
		if b == nil {
			return "unset"
		}
		if *b {
			return "true"
		}
		return "false"
	}
	for _, tc := range []struct {
		name string
		got  *bool
		want string
	}{
		{"acme jwt (issuer shared with globex's issuers[] and initech)", c.Tenants[0].JWT.RequireTenantClaim, "true"},
		{"globex jwt (its own issuer)", c.Tenants[1].JWT.RequireTenantClaim, "false"},
		{"globex issuers[0] (shared)", c.Tenants[1].Issuers[0].RequireTenantClaim, "true"},
		{"initech explicit false", c.Tenants[2].JWT.RequireTenantClaim, "false"},
		{"hooli explicit true", c.Tenants[3].JWT.RequireTenantClaim, "true"},
	} {
		if g := get(tc.got); g != tc.want {
			t.Errorf("%s: require_tenant_claim %s, want %s", tc.name, g, tc.want)
		}
	}
}

func TestJWTKeyRefreshSettings(t *testing.T) {
	c, err := loadBody(t, `tenants:
  - id: acme
    domains: [acme.test]
    jwt: {issuer: i, audiences: [a], jwks_url: 'https://idp.test/keys', min_refetch: 2s, min_refresh_interval: 30s, max_backoff: 10s}
`)
	if err != nil {
		t.Fatal(err)
	}
	if k := c.Tenants[0].JWT.KeyRefresh; k.MinRefetch != 2*time.Second || k.MinRefreshInterval != 30*time.Second || k.MaxBackoff != 10*time.Second {
		t.Fatalf("key refresh = %+v", k)
	}
	for _, tc := range []struct{ jwt, want string }{
		{"{issuer: i, audiences: [a], jwks_file: k.json, min_refetch: 2s}", "apply only to jwt.jwks_url"},
		{"{issuer: i, audiences: [a], jwks_url: 'https://idp.test/keys', min_refetch: -1s}", "jwt.min_refetch: must not be negative"},
		{"{issuer: i, audiences: [a], jwks_url: 'https://idp.test/keys', min_refresh_interval: 1h, refresh_interval: 1m}", "jwt.min_refresh_interval: 1h0m0s is above refresh_interval 1m0s"},
		{"{issuer: i, audiences: [a], jwks_url: 'https://idp.test/keys', initial_backoff: 1m, max_backoff: 1s}", "jwt.initial_backoff: 1m0s is above max_backoff 1s"},
	} {
		_, err := loadBody(t, "tenants:\n  - id: acme\n    domains: [acme.test]\n    jwt: "+tc.jwt+"\n")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("jwt %s: error %v, want %q", tc.jwt, err, tc.want)
		}
	}
}
