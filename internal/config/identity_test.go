package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSessionsTOTPKey(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "k.json"), []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	head := "envoy: {listen: 127.0.0.1:1}\nxds: {grpc: 127.0.0.1:2}\nauthz: {grpc: 127.0.0.1:3}\nrunner: {http: 127.0.0.1:4}\n"
	tenant := "tenants:\n  - id: acme\n    domains: [acme.test]\n    jwt: {issuer: i, audiences: [a], jwks_file: k.json}\n" +
		"    ldap: {url: 'ldap://127.0.0.1:389', user_base_dn: 'ou=people,dc=example,dc=com'}\n"
	load := func(body string) (*Config, error) {
		p := filepath.Join(dir, "kailash.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return Load(p)
	}
	for _, tc := range []struct {
		name, body, want string
	}{
		{"key without redis", "sessions: {totp_key_env: K}\n" + head + tenant, "sessions.totp_key_env: only with sessions.redis"},
		{"redis and mfa without a key", "sessions: {redis: {addr: '127.0.0.1:6379'}}\n" + head + tenant + "    mfa: {roles: [admin]}\n",
			`sessions.totp_key_env: required with sessions.redis when a tenant requires MFA (tenant "acme")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := load(tc.body); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	// Redis without MFA needs no key; with one, it is read from the environment.
	if _, err := load("sessions: {redis: {addr: '127.0.0.1:6379'}}\n" + head + tenant); err != nil {
		t.Fatal(err)
	}
	c, err := load("sessions: {redis: {addr: '127.0.0.1:6379'}, totp_key_env: KAILASH_TEST_TOTP_KEY}\n" + head + tenant + "    mfa: {required: true}\n")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sessions.TOTPKey(); err == nil {
		t.Fatal("unset key env accepted")
	}
	t.Setenv("KAILASH_TEST_TOTP_KEY", "a2V5")
	if k, err := c.Sessions.TOTPKey(); err != nil || k != "a2V5" {
		t.Fatalf("key = %q, %v", k, err)
	}
}
