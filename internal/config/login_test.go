package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoginSettings(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "k.json"), []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	head := "envoy: {listen: 127.0.0.1:1}\nxds: {grpc: 127.0.0.1:2}\nauthz: {grpc: 127.0.0.1:3}\nrunner: {http: 127.0.0.1:4}\n" +
		"tenants:\n  - id: acme\n    domains: [acme.test]\n    jwt: {issuer: i, audiences: [a], jwks_file: k.json}\n" +
		"    ldap: {url: 'ldap://127.0.0.1:389', user_base_dn: 'ou=people,dc=example,dc=com'}\n"
	load := func(body string) (*Config, error) {
		p := filepath.Join(dir, "kailash.yaml")
		if err := os.WriteFile(p, []byte(head+body), 0o600); err != nil {
			t.Fatal(err)
		}
		return Load(p)
	}
	c, err := load("")
	if err != nil {
		t.Fatal(err)
	}
	tn := c.Tenants[0]
	if tn.Login.SAMLMaxPending != DefaultSAMLMaxPending || tn.Login.SAMLStartsPerMinute != DefaultSAMLStartsPerMinute ||
		tn.MFA.Enrolment != EnrolmentSelf || len(tn.MFA.AdminRoles) != 1 || tn.MFA.AdminRoles[0] != "admin" {
		t.Fatalf("defaults: %+v %+v", tn.Login, tn.MFA)
	}
	if _, err := load("    login: {allowed_origins: ['https://portal.example.com'], saml_max_pending: 5, saml_starts_per_minute: 3}\n" +
		"    mfa: {enrolment: admin, admin_roles: [sec], notify_url: 'https://hooks.example.com/x'}\n"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ body, want string }{
		{"    login: {allowed_origins: ['https://*.example.com']}\n", "login.allowed_origins"},
		{"    login: {allowed_origins: ['portal.example.com']}\n", "login.allowed_origins"},
		{"    login: {saml_max_pending: -1}\n", "login.saml_max_pending"},
		{"    mfa: {enrolment: anyone}\n", "mfa.enrolment"},
		{"    mfa: {notify_url: 'ftp://x'}\n", "mfa.notify_url"},
		{"    mfa: {notify_url: 'https://u:p@x.example'}\n", "mfa.notify_url"},
	} {
		if _, err := load(tc.body); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.body, err, tc.want)
		}
	}
}
