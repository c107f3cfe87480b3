package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExampleLoads(t *testing.T) {
	c, err := Load("../../examples/kailash.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Tenants) != 2 || c.Tenants[0].ID != "acme" || c.Tenants[0].Line == 0 {
		t.Fatalf("unexpected tenants: %+v", c.Tenants)
	}
	if c.Tenants[0].JWT.ClockSkew != DefaultClockSkew || c.Policy.Decision != DefaultDecision {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

func TestErrorsNameFileLineAndField(t *testing.T) {
	dir := t.TempDir()
	jwks := filepath.Join(dir, "k.json")
	if err := os.WriteFile(jwks, []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	head := "envoy: {listen: 127.0.0.1:1}\nxds: {grpc: 127.0.0.1:2}\nauthz: {grpc: 127.0.0.1:3}\nrunner: {http: 127.0.0.1:4}\ntenants:\n"
	tenant := func(id, domain, extra string) string {
		return "  - id: " + id + "\n    domains: [" + domain + "]\n    jwt: {issuer: i, audiences: [a], jwks_file: k.json}\n" + extra
	}
	cases := []struct {
		name, body string
		want       []string
	}{
		{"unknown top-level key", head + tenant("a", "a.test", "") + "bogus: 1\n", []string{"kailash.yaml:9:1: bogus: unknown key"}},
		{"unknown tenant key", head + tenant("a", "a.test", "    colour: red\n"), []string{"kailash.yaml:9:5: tenants[0].colour: unknown key"}},
		{"unknown nested jwt key", head + "  - id: a\n    domains: [a.test]\n    jwt:\n      issuer: i\n      audiences: [a]\n      jwks_file: k.json\n      algs: [HS256]\n", []string{"kailash.yaml:12:7: tenants[0].jwt.algs: unknown key"}},
		{"duplicate domain", head + tenant("a", "a.test", "") + tenant("b", "A.test", ""), []string{"kailash.yaml:9", `tenant "b"`, "already served by tenant \"a\""}},
		{"bad id", head + tenant("Bad_ID", "a.test", ""), []string{"kailash.yaml:6", "id: must be"}},
		{"missing jwks file", head + "  - id: a\n    domains: [a.test]\n    jwt: {issuer: i, audiences: [a], jwks_file: nope.json}\n", []string{"jwt.jwks_file", "nope.json"}},
		{"bad address", strings.Replace(head, "127.0.0.1:3", "localhost", 1) + tenant("a", "a.test", ""), []string{"authz.grpc"}},
		{"no tenants", head, []string{"at least one tenant"}},
		{"decision cache too big", head + tenant("a", "a.test", "") + "policy: {decision_cache: {size: 2000000}}\n", []string{"policy.decision_cache.size: 2000000: must be between 0"}},
		{"decision cache negative", head + tenant("a", "a.test", "") + "policy: {decision_cache: {size: -1}}\n", []string{"policy.decision_cache.size: -1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "kailash.yaml")
			if err := os.WriteFile(p, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(p)
			if err == nil {
				t.Fatal("expected an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
