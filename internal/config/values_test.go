package config

import (
	"net/netip"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// A bad address, network or URL is reported by Load with the file, the
// line it is on and the field, beside every other problem of the file.
func TestValueErrorsNameFileLineAndField(t *testing.T) {
	base := "envoy:\n  listen: 127.0.0.1:1\nxds: {grpc: 127.0.0.1:2}\nauthz: {grpc: 127.0.0.1:3}\nrunner: {http: 127.0.0.1:4}\n"
	tenant := "tenants:\n  - id: acme\n    domains: [acme.test]\n    jwt: {issuer: i, audiences: [a], jwks_file: k.json}\n"
	cases := []struct {
		name, body string
		want       []string
	}{
		{"address without a port", strings.Replace(base, "127.0.0.1:1", "127.0.0.1", 1) + tenant,
			[]string{"kailash.yaml:2: envoy.listen: ", "missing port"}},
		{"port out of range", base + "ratelimit:\n  backend: memory\n  grpc: 127.0.0.1:99999\n" + tenant,
			[]string{"kailash.yaml:8: ratelimit.grpc: ", "port must be 1..65535"}},
		{"tls listen", base + "tls: {listen: 'localhost:https'}\n" + tenant,
			[]string{"kailash.yaml:6: tls.listen: ", "port must be 1..65535"}},
		{"bad upstream", base + tenant + "    upstreams:\n      - 127.0.0.1:80\n      - nowhere\n",
			[]string{"kailash.yaml:12: tenant \"acme\": upstreams: ", "nowhere"}},
		{"bad cidr", base + tenant + "    # the office\n    ip_allowlist: [10.0.0.0/8, 10.0.0.0/33]\n",
			[]string{"kailash.yaml:11: tenant \"acme\": ip_allowlist: ", `"10.0.0.0/33" is not a CIDR`}},
		{"empty allowlist entry", base + tenant + "    ip_allowlist: ['']\n",
			[]string{"kailash.yaml:7: tenant \"acme\": ip_allowlist: empty entry"}},
		{"jwks_url scheme", base + "tenants:\n  - id: acme\n    domains: [acme.test]\n    jwt:\n      issuer: i\n      audiences: [a]\n      jwks_url: ftp://idp.test/keys\n",
			[]string{"kailash.yaml:12: tenant \"acme\": jwt.jwks_url: ", "must be an http(s) URL"}},
		{"jwks_url without a host", base + "tenants:\n  - id: acme\n    domains: [acme.test]\n    jwt: {issuer: i, audiences: [a], jwks_url: 'https://'}\n",
			[]string{"kailash.yaml:9: tenant \"acme\": jwt.jwks_url: ", "must be an http(s) URL"}},
		{"issuer discovery_url", base + tenant + "    issuers:\n      - issuer: corp\n        audiences: [a]\n        discovery_url: corp.test/.well-known\n",
			[]string{"kailash.yaml:13: tenant \"acme\": issuers[0].discovery_url: ", "must be an http(s) URL"}},
		{"address as a mapping", strings.Replace(base, "127.0.0.1:1", "{host: 127.0.0.1}", 1) + tenant,
			[]string{"kailash.yaml:2:11: envoy.listen: want a string, not a mapping"}},
		{"every problem at once", strings.Replace(base, "127.0.0.1:4", "127.0.0.1:0", 1) + tenant + "    upstreams: [x]\n",
			[]string{"kailash.yaml:5: runner.http: ", "kailash.yaml:10: tenant \"acme\": upstreams: "}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadString(t, tc.body)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
		})
	}
}

// Load parses addresses, networks and URLs once, into typed values.
func TestTypedValues(t *testing.T) {
	c, err := loadString(t, "envoy: {listen: '[::1]:8080'}\nxds: {grpc: 127.0.0.1:2}\nauthz: {grpc: 127.0.0.1:3}\nrunner: {http: runner.internal:4}\n"+
		"tenants:\n  - id: acme\n    domains: [acme.test]\n    jwt: {issuer: i, audiences: [a], jwks_url: 'https://idp.test/keys?x=1'}\n"+
		"    upstreams: [10.0.0.1:80]\n    ip_allowlist: [192.0.2.7, '2001:db8::/32']\n")
	if err != nil {
		t.Fatal(err)
	}
	l := c.Envoy.Listen
	if ap, ok := l.AddrPort(); !ok || ap != netip.MustParseAddrPort("[::1]:8080") || l.Host() != "::1" || l.Port() != 8080 || l.String() != "[::1]:8080" {
		t.Errorf("envoy.listen: %v %v %q %d %q", ap, ok, l.Host(), l.Port(), l)
	}
	r := c.Runner.HTTP
	if _, ok := r.AddrPort(); ok || r.IsIP() || r.Host() != "runner.internal" || r.Port() != 4 {
		t.Errorf("runner.http: %+v", r)
	}
	if !c.Authz.HTTP.IsZero() || c.Authz.HTTP.String() != "" {
		t.Errorf("unset authz.http: %q", c.Authz.HTTP)
	}
	tn := c.Tenants[0]
	if len(tn.Upstreams) != 1 || !tn.Upstreams[0].IsIP() || tn.Upstreams[0].Port() != 80 {
		t.Errorf("upstreams: %v", tn.Upstreams)
	}
	if len(tn.IPAllowlist) != 2 || tn.IPAllowlist[0].Prefix() != netip.MustParsePrefix("192.0.2.7/32") || tn.IPAllowlist[1].String() != "2001:db8::/32" {
		t.Errorf("ip_allowlist: %v", tn.IPAllowlist)
	}
	if u := tn.JWT.JWKSURL; u.Scheme() != "https" || u.URL().Host != "idp.test" || u.String() != "https://idp.test/keys?x=1" {
		t.Errorf("jwks_url: %v", u)
	}
	// Written back, the values are the text they were read from.
	out, err := yaml.Marshal(c.Tenants[0].IPAllowlist)
	if err != nil || string(out) != "- 192.0.2.7/32\n- 2001:db8::/32\n" {
		t.Errorf("marshal ip_allowlist: %q %v", out, err)
	}
	out, err = yaml.Marshal(struct {
		L HostPort `yaml:"l"`
		U URL      `yaml:"u"`
	}{c.Envoy.Listen, tn.JWT.JWKSURL})
	if err != nil || string(out) != "l: '[::1]:8080'\nu: https://idp.test/keys?x=1\n" {
		t.Errorf("marshal: %q %v", out, err)
	}
}

func TestParseValues(t *testing.T) {
	if _, err := ParseHostPort("127.0.0.1"); err == nil {
		t.Error("address without a port accepted")
	}
	if hp, err := ParseHostPort("127.0.0.1:0"); err != nil || hp.Port() != 0 || hp.String() != "127.0.0.1:0" {
		t.Errorf("port 0 in code: %v %v", hp, err)
	}
	if hp := HostPortFromText("x"); hp.Err() == nil || hp.String() != "x" || hp.IsZero() {
		t.Errorf("bad text: %+v", hp)
	}
	if _, err := ParsePrefix("10.0.0.1/8"); err == nil || !strings.Contains(err.Error(), "host bits") {
		t.Errorf("host bits: %v", err)
	}
	if _, err := ParseURL("ldap://dir.test", "http", "https"); err == nil || !strings.Contains(err.Error(), "scheme must be http or https") {
		t.Errorf("scheme: %v", err)
	}
	if _, err := ParseURL("/keys"); err == nil {
		t.Error("relative URL accepted")
	}
	for id, ok := range map[string]bool{"acme": true, "a-1": true, "-a": false, "Acme": false, strings.Repeat("a", 64): false} {
		if ValidTenantID(id) != ok {
			t.Errorf("ValidTenantID(%q) = %v", id, !ok)
		}
	}
	if !ValidRole("ops:admin") || ValidRole("a b") || !ValidDomain("*.acme.test:8080") || ValidDomain("*") {
		t.Error("role or domain rule")
	}
}
