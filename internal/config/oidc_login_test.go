package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestOIDCLoginSettings(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{"k.json": `{"keys":[]}`, "secret": "s3cret\n", "empty": "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	head := "envoy: {listen: 127.0.0.1:1}\nxds: {grpc: 127.0.0.1:2}\nauthz: {grpc: 127.0.0.1:3}\nrunner: {http: 127.0.0.1:4}\n" +
		"tenants:\n  - id: acme\n    domains: [acme.test]\n    jwt: {issuer: i, audiences: [a], jwks_file: k.json}\n"
	good := "issuer: https://idp.example.com, client_id: kailash, client_secret_file: secret, redirect_url: 'https://acme.test/auth/oidc/callback'"
	load := func(oidc string) (*Config, error) {
		p := filepath.Join(dir, "kailash.yaml")
		if err := os.WriteFile(p, []byte(head+"    login:\n      oidc: {"+oidc+"}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return Load(p)
	}
	c, err := load(good)
	if err != nil {
		t.Fatal(err)
	}
	o := c.Tenants[0].Login.OIDC
	if !slices.Equal(o.Scopes, []string{"openid", "email", "profile"}) || o.RolesClaim != "roles" || o.GroupsClaim != "groups" ||
		o.TenantClaim != "tenant" || o.ClockSkew != DefaultClockSkew || o.Timeout != 5*time.Second ||
		o.MaxPending != DefaultOIDCMaxPending || o.StartsPerMinute != DefaultOIDCStartsPerMinute {
		t.Fatalf("defaults: %+v", o)
	}
	if s, err := o.ClientSecret(c); err != nil || s != "s3cret" {
		t.Fatalf("client secret %q, %v", s, err)
	}
	if c, err = load(good + ", scopes: [groups]"); err != nil || !slices.Equal(c.Tenants[0].Login.OIDC.Scopes, []string{"openid", "groups"}) {
		t.Fatalf("openid is always asked for: %v %v", c, err)
	}
	t.Setenv("KAILASH_TEST_OIDC_SECRET", "from-env")
	if c, err = load(strings.Replace(good, "client_secret_file: secret", "client_secret_env: KAILASH_TEST_OIDC_SECRET", 1)); err != nil {
		t.Fatal(err)
	} else if s, err := c.Tenants[0].Login.OIDC.ClientSecret(c); err != nil || s != "from-env" {
		t.Fatalf("client secret from env %q, %v", s, err)
	}
	if c, err = load(strings.Replace(good, "client_secret_file: secret", "client_secret_env: KAILASH_TEST_OIDC_UNSET", 1)); err != nil {
		t.Fatal(err)
	} else if _, err := c.Tenants[0].Login.OIDC.ClientSecret(c); err == nil || !strings.Contains(err.Error(), "login.oidc.client_secret_env") {
		t.Fatalf("unset env: %v", err)
	}
	for _, tc := range []struct{ body, want string }{
		{"client_id: k, redirect_url: 'https://acme.test/auth/oidc/callback'", "login.oidc.issuer: required"},
		{strings.Replace(good, "issuer: https://idp.example.com", "issuer: kailash", 1), "login.oidc.issuer"},
		{strings.Replace(good, "issuer: https://idp.example.com", "issuer: not-a-url", 1), "login.oidc.issuer"},
		{strings.Replace(good, "client_id: kailash, ", "", 1), "login.oidc.client_id: required"},
		{strings.Replace(good, "client_secret_file: secret", "client_secret_file: missing", 1), "login.oidc.client_secret_file"},
		{good + ", client_secret_env: X", "give client_secret_env or client_secret_file"},
		{strings.Replace(good, "https://acme.test/auth/oidc/callback", "/auth/oidc/callback", 1), "login.oidc.redirect_url"},
		{strings.Replace(good, "https://acme.test/auth/oidc/callback", "https://acme.test/elsewhere", 1), "login.oidc.redirect_url"},
		{good + ", post_logout_redirect_url: 'ftp://x'", "login.oidc.post_logout_redirect_url"},
		{good + ", discovery_url: 'ftp://x'", "login.oidc.discovery_url"},
		{good + ", scopes: ['a b']", "login.oidc.scopes"},
		{good + ", group_roles: {Eng: ''}", "login.oidc.group_roles"},
		{good + ", attributes: {roles: roles}", "login.oidc.attributes"},
		{good + ", clock_skew: 10m", "login.oidc.clock_skew"},
		{good + ", max_pending: -1", "login.oidc.max_pending"},
		{good + ", starts_per_minute: -1", "login.oidc.starts_per_minute"},
		// A secret is never written in the file itself.
		{good + ", client_secret: inline", "login.oidc.client_secret: unknown key"},
	} {
		if _, err := load(tc.body); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.body, err, tc.want)
		}
	}
}
