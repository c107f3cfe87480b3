package translate

import (
	"os"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/wire"
)

func testPair(t *testing.T, name string) KeyPair {
	t.Helper()
	c, err := os.ReadFile("testdata/certs/" + name + ".pem")
	if err != nil {
		t.Fatal(err)
	}
	k, err := os.ReadFile("testdata/certs/" + name + "-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	return KeyPair{CertPEM: c, KeyPEM: k}
}

func tlsConfig() *config.Config {
	c := validConfig()
	c.TLS = config.EdgeTLS{Listen: config.MustHostPort("127.0.0.1:8443")}
	c.Tenants[0].TLS = config.TenantTLS{CertFile: "acme.pem", KeyFile: "acme-key.pem"}
	return c
}

func TestTLSErrors(t *testing.T) {
	acme, globex := testPair(t, "acme"), testPair(t, "globex")
	cases := []struct {
		name   string
		mutate func(*config.Config, *Inputs)
		want   []string
	}{
		{"certificate not read", func(_ *config.Config, in *Inputs) { delete(in.Certificates, "acme") }, []string{`tenant "acme"`, "were not read"}},
		{"key of another certificate", func(_ *config.Config, in *Inputs) {
			in.Certificates["acme"] = KeyPair{CertPEM: acme.CertPEM, KeyPEM: globex.KeyPEM}
		}, []string{`tenant "acme"`, "acme.pem", "private key does not match"}},
		{"garbage certificate", func(_ *config.Config, in *Inputs) {
			in.Certificates["acme"] = KeyPair{CertPEM: []byte("nope"), KeyPEM: acme.KeyPEM}
		}, []string{`tenant "acme"`, "cert_file"}},
		{"certificate without tls.listen", func(c *config.Config, _ *Inputs) { c.TLS.Listen = config.HostPort{} }, []string{`tenant "acme"`, "tls.listen"}},
		{"tls.listen on a name", func(c *config.Config, _ *Inputs) { c.TLS.Listen = config.MustHostPort("localhost:8443") }, []string{"tls.listen", "IP address"}},
		{"tls.listen is envoy.listen", func(c *config.Config, _ *Inputs) { c.TLS.Listen = c.Envoy.Listen }, []string{"tls.listen", "also envoy.listen"}},
		{"bad min version", func(c *config.Config, _ *Inputs) { c.TLS.MinVersion = "1.1" }, []string{"tls.min_version"}},
		{"redirect without listener", func(c *config.Config, _ *Inputs) {
			c.TLS = config.EdgeTLS{RedirectHTTP: true}
			c.Tenants[0].TLS = config.TenantTLS{}
		}, []string{"tls.redirect_http"}},
		{"same SNI name for two tenants", func(c *config.Config, in *Inputs) {
			c.Tenants[1].Domains = []string{"acme.test:8443"}
			c.Tenants[1].TLS = config.TenantTLS{CertFile: "g.pem", KeyFile: "g-key.pem"}
			in.Certificates["globex"] = globex
		}, []string{`tenant "globex"`, `SNI name "acme.test"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tlsConfig()
			in := Inputs{Certificates: map[string]KeyPair{"acme": acme}}
			tc.mutate(c, &in)
			res, err := TranslateWith(c, in)
			if err == nil {
				t.Fatalf("expected an error, got %d listeners", len(res.Listeners))
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("error quotes key material: %v", err)
			}
		})
	}
}

func TestTLSShape(t *testing.T) {
	c := tlsConfig()
	c.TLS.RedirectHTTP = true
	res, err := TranslateWith(c, Inputs{Certificates: map[string]KeyPair{"acme": testPair(t, "acme")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Listeners) != 2 || len(res.Routes) != 2 || len(res.Secrets) != 1 {
		t.Fatalf("got %d listeners, %d routes, %d secrets", len(res.Listeners), len(res.Routes), len(res.Secrets))
	}
	https := res.Listeners[1].(*listenerv3.Listener)
	if https.Name != HTTPSListenerName || len(https.FilterChains) != 1 {
		t.Fatalf("https listener %s with %d chains", https.Name, len(https.FilterChains))
	}
	if got := strings.Join(https.FilterChains[0].FilterChainMatch.ServerNames, ","); got != "acme.test,www.acme.test" {
		t.Errorf("server names %s", got)
	}
	redirect := res.Routes[1].(*routev3.RouteConfiguration)
	for _, v := range redirect.VirtualHosts {
		isRedirect := v.Routes[0].GetRedirect() != nil
		if isRedirect != (v.Name == "tenant_acme") {
			t.Errorf("%s: redirect %v", v.Name, isRedirect)
		}
	}
	// Without any certificate there is no HTTPS listener (Envoy refuses a
	// listener without filter chains) and nothing redirects.
	c.Tenants[0].TLS = config.TenantTLS{}
	res, err = Translate(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Listeners) != 1 || len(res.Routes) != 1 || len(res.Secrets) != 0 {
		t.Fatalf("no certificates: got %d listeners, %d routes, %d secrets", len(res.Listeners), len(res.Routes), len(res.Secrets))
	}
}

// TestAuthRoute: /auth/ comes first, goes to the authz HTTP cluster without
// ext_authz and with the tenant header overwritten; only with authz.http.
func TestAuthRoute(t *testing.T) {
	c := validConfig()
	res, err := Translate(c)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(res.Routes[0].(*routev3.RouteConfiguration).VirtualHosts[0].Routes); n != 1 {
		t.Fatalf("without authz.http: %d routes", n)
	}
	c.Authz.HTTP = config.MustHostPort("127.0.0.1:9192")
	res, err = Translate(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range res.Routes[0].(*routev3.RouteConfiguration).VirtualHosts {
		if v.Name == UnknownHostName {
			if len(v.Routes) != 1 {
				t.Errorf("unknown host has %d routes", len(v.Routes))
			}
			continue
		}
		r := v.Routes[0]
		if r.Match.GetPrefix() != wire.AuthPrefix || r.GetRoute().GetCluster() != AuthzHTTPCluster {
			t.Fatalf("%s: first route %v", v.Name, r)
		}
		h := r.RequestHeadersToAdd[0]
		if h.Header.Key != wire.HeaderTenant || "tenant_"+h.Header.Value != v.Name || h.AppendAction.String() != "OVERWRITE_IF_EXISTS_OR_ADD" {
			t.Errorf("%s: tenant header %v", v.Name, h)
		}
		if _, ok := r.TypedPerFilterConfig["envoy.filters.http.ext_authz"]; !ok {
			t.Errorf("%s: ext_authz not disabled on /auth/", v.Name)
		}
		if v.Routes[1].Match.GetPrefix() != "/" {
			t.Errorf("%s: catch-all not last", v.Name)
		}
	}
}
