package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFederationConfig(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"k.json", "sp.key", "sp.crt", "idp.xml"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	head := "envoy: {listen: 127.0.0.1:1}\nxds: {grpc: 127.0.0.1:2}\nauthz: {grpc: 127.0.0.1:3}\nrunner: {http: 127.0.0.1:4}\ntenants:\n  - id: a\n    domains: [a.test]\n"
	jwt := "    jwt: {issuer: https://legacy.test, audiences: [a], jwks_file: k.json}\n"
	saml := "    saml:\n      entity_id: https://a.test/auth/saml/metadata\n      acs_url: https://a.test/auth/saml/acs\n      key_file: sp.key\n      cert_file: sp.crt\n      idp_metadata_file: idp.xml\n      group_roles: {Admins: admin}\n      attributes: {groups: memberOf, extra: {department: dept}}\n"
	load := func(t *testing.T, body string) (*Config, error) {
		t.Helper()
		p := filepath.Join(dir, "kailash.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return Load(p)
	}

	t.Run("issuers only, with defaults", func(t *testing.T) {
		c, err := load(t, head+"    issuers:\n      - {issuer: https://idp.test, audiences: [api]}\n      - {issuer: corp, audiences: [api], jwks_url: https://corp.test/keys, clock_skew: 1m, roles_claim: groups}\n")
		if err != nil {
			t.Fatal(err)
		}
		is := c.Tenants[0].Issuers
		if len(is) != 2 || is[0].ClockSkew != DefaultClockSkew || is[0].RolesClaim != "roles" || is[0].TenantClaim != "tenant" || is[1].RolesClaim != "groups" {
			t.Fatalf("issuers = %+v", is)
		}
		if c.Tenants[0].JWT.Configured() {
			t.Fatal("jwt reported configured")
		}
	})
	t.Run("jwt, issuers and saml together", func(t *testing.T) {
		c, err := load(t, head+jwt+saml+"    issuers: [{issuer: https://idp.test, audiences: [api], discovery_url: https://idp.test/discovery}]\n")
		if err != nil {
			t.Fatal(err)
		}
		s := c.Tenants[0].SAML
		if s == nil || s.GroupRoles["Admins"] != "admin" || s.Attributes.Extra["department"] != "dept" || s.Attributes.Groups != "memberOf" {
			t.Fatalf("saml = %+v", s)
		}
	})
	t.Run("jwt alone still works", func(t *testing.T) {
		if _, err := load(t, head+jwt); err != nil {
			t.Fatal(err)
		}
	})

	cases := []struct {
		name, body string
		want       []string
	}{
		{"neither jwt nor issuers", head, []string{`tenant "a"`, "jwt or issuers", "jwt.issuer: required"}},
		{"issuer without audience", head + "    issuers: [{issuer: https://idp.test}]\n", []string{"kailash.yaml:6", `tenant "a": issuers[0].audiences`}},
		{"issuer missing", head + "    issuers: [{audiences: [x]}]\n", []string{"issuers[0].issuer: required"}},
		{"non-URL issuer without jwks_url", head + "    issuers: [{issuer: corp, audiences: [x]}]\n", []string{"issuers[0].issuer", "discovery needs"}},
		{"both discovery and jwks", head + "    issuers: [{issuer: https://i.test, audiences: [x], jwks_url: https://i.test/k, discovery_url: https://i.test/d}]\n", []string{"issuers[0]: give discovery_url or jwks_url"}},
		{"bad jwks url", head + "    issuers: [{issuer: https://i.test, audiences: [x], jwks_url: ftp://i.test/k}]\n", []string{"issuers[0].jwks_url"}},
		{"duplicate issuer", head + jwt + "    issuers: [{issuer: https://legacy.test, audiences: [x]}]\n", []string{"issuers[0].issuer", "trusted twice"}},
		{"issuer is our session issuer", head + "    issuers: [{issuer: kailash, audiences: [x], jwks_url: https://k.test/k}]\n", []string{"issuers[0].issuer", "sessions.issuer"}},
		{"clock skew too large", head + "    issuers: [{issuer: https://i.test, audiences: [x], clock_skew: 1h}]\n", []string{"issuers[0].clock_skew"}},
		{"negative refresh", head + "    issuers: [{issuer: https://i.test, audiences: [x], refresh_interval: -1s}]\n", []string{"issuers[0].refresh_interval"}},
		{"unknown issuer key", head + "    issuers: [{issuer: https://i.test, audiences: [x], algs: [HS256]}]\n", []string{"algs"}},
		{"saml without entity id", head + jwt + strings.Replace(saml, "entity_id", "metadata_url", 1), []string{"saml.entity_id: required"}},
		{"saml relative acs", head + jwt + strings.Replace(saml, "https://a.test/auth/saml/acs", "/auth/saml/acs", 1), []string{"saml.acs_url"}},
		{"saml missing key", head + jwt + strings.Replace(saml, "sp.key", "nope.key", 1), []string{"saml.key_file", "nope.key"}},
		{"saml two idp metadata", head + jwt + saml + "      idp_metadata_url: https://idp.test/metadata\n", []string{"not both"}},
		{"saml no idp metadata", head + jwt + strings.Replace(saml, "      idp_metadata_file: idp.xml\n", "", 1), []string{"idp_metadata_file or idp_metadata_url"}},
		{"saml empty role", head + jwt + strings.Replace(saml, "{Admins: admin}", `{Admins: ""}`, 1), []string{"saml.group_roles", "Admins"}},
		{"saml unknown key", head + jwt + saml + "      want_signed: true\n", []string{"want_signed"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, tc.body)
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
