package translate

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"gopkg.in/yaml.v3"

	"github.com/kailash-gw/kailash/internal/config"
)

var update = flag.Bool("update", false, "rewrite testdata/out from testdata/in and delete stale goldens")

// TestGolden translates every testdata/in/<name>.yaml and compares the result
// with testdata/out/<name>.yaml.
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "in", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) == 0 {
		t.Fatal("no inputs in testdata/in")
	}
	want := map[string]bool{}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		out := filepath.Join("testdata", "out", name+".yaml")
		want[out] = true
		t.Run(name, func(t *testing.T) {
			cfg, err := config.Load(in)
			if err != nil {
				t.Fatal(err)
			}
			res, err := TranslateWith(cfg, readInputs(t, cfg))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ToYAML(res)
			if err != nil {
				t.Fatal(err)
			}
			if *update {
				if err := os.WriteFile(out, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			golden, err := os.ReadFile(out)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if !bytes.Equal(got, golden) {
				t.Errorf("%s differs from the translation (run go test -update and review the diff):\n%s", out, lineDiff(string(golden), string(got)))
			}
		})
	}
	outs, err := filepath.Glob(filepath.Join("testdata", "out", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range outs {
		if want[o] {
			continue
		}
		if *update {
			if err := os.Remove(o); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("stale golden %s has no input (run go test -update)", o)
	}
}

// lineDiff shows the first differing lines, enough to see what moved.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return "line " + strconv.Itoa(i+1) + ":\n- " + wl + "\n+ " + gl
		}
	}
	return "(equal lines; trailing bytes differ)"
}

// decoded is s as kailash.yaml's decoder reads it, a bad value included
// (what a config that skipped config.Validate holds).
func decoded[T any](s string) T {
	var v T
	if err := yaml.Unmarshal([]byte(strconv.Quote(s)), &v); err != nil {
		panic(err)
	}
	return v
}

func validConfig() *config.Config {
	return &config.Config{
		Envoy:  config.Envoy{Listen: config.MustHostPort("127.0.0.1:8080"), NodeID: "n", Routes: config.RoutesSingle},
		XDS:    config.XDS{GRPC: config.MustHostPort("127.0.0.1:18000")},
		Authz:  config.Authz{GRPC: config.MustHostPort("127.0.0.1:9191"), Timeout: 500 * time.Millisecond},
		Runner: config.Runner{HTTP: config.MustHostPort("127.0.0.1:8081")},
		Tenants: []config.Tenant{
			{ID: "acme", Domains: []string{"acme.test", "www.acme.test"}},
			{ID: "globex", Domains: []string{"globex.test"}},
		},
	}
}

func TestTranslateErrors(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*config.Config)
		want   []string
	}{
		{"no tenants", func(c *config.Config) { c.Tenants = nil }, []string{"at least one tenant"}},
		{"empty domains", func(c *config.Config) { c.Tenants[1].Domains = nil }, []string{`tenant "globex"`, "at least one domain"}},
		{"empty domain", func(c *config.Config) { c.Tenants[1].Domains = []string{""} }, []string{`tenant "globex"`, `"" is not a host name`}},
		{"catch-all domain", func(c *config.Config) { c.Tenants[1].Domains = []string{"*"} }, []string{`tenant "globex"`, `"*" is not a host name`}},
		{"domain with space", func(c *config.Config) { c.Tenants[1].Domains = []string{"a b.test"} }, []string{`tenant "globex"`, "not a host name"}},
		{"duplicate domain across tenants", func(c *config.Config) { c.Tenants[1].Domains = []string{"ACME.test"} }, []string{`tenant "globex"`, `already served by tenant "acme"`}},
		{"duplicate domain in tenant", func(c *config.Config) { c.Tenants[0].Domains = []string{"acme.test", "acme.test"} }, []string{`tenant "acme"`, "listed twice"}},
		{"empty tenant id", func(c *config.Config) { c.Tenants[1].ID = "" }, []string{"tenants[1]", "id: required"}},
		{"bad tenant id", func(c *config.Config) { c.Tenants[1].ID = "Globex_1" }, []string{`tenant "Globex_1"`, "id: must be"}},
		{"duplicate tenant id", func(c *config.Config) { c.Tenants[1].ID = "acme" }, []string{`tenant "acme"`, "id: duplicate"}},
		{"listen without port", func(c *config.Config) { c.Envoy.Listen = decoded[config.HostPort]("127.0.0.1") }, []string{"envoy.listen"}},
		{"listen on a name", func(c *config.Config) { c.Envoy.Listen = config.MustHostPort("localhost:8080") }, []string{"envoy.listen", "IP address"}},
		{"authz bad port", func(c *config.Config) { c.Authz.GRPC = decoded[config.HostPort]("127.0.0.1:99999") }, []string{"authz.grpc", "port"}},
		{"runner missing", func(c *config.Config) { c.Runner.HTTP = config.HostPort{} }, []string{"runner.http"}},
		{"zero timeout", func(c *config.Config) { c.Authz.Timeout = 0 }, []string{"authz.timeout", "positive"}},
		{"bad cidr", func(c *config.Config) {
			c.Tenants[1].IPAllowlist = []config.Prefix{decoded[config.Prefix]("300.0.0.0/8")}
		}, []string{`tenant "globex"`, "ip_allowlist"}},
		{"quota without rls", func(c *config.Config) { c.Tenants[0].Limits.PerUserPerHour = 5 }, []string{`tenant "acme"`, "ratelimit.grpc"}},
		{"bad role name", func(c *config.Config) {
			c.RateLimit.GRPC = config.MustHostPort("127.0.0.1:9193")
			c.Tenants[0].Limits.PerRolePerHour = map[string]uint64{"a b": 1}
		}, []string{`tenant "acme"`, "per_role_per_hour"}},
		{"bad upstream", func(c *config.Config) {
			c.Tenants[1].Upstreams = []config.HostPort{decoded[config.HostPort]("127.0.0.1")}
		}, []string{`tenant "globex"`, "upstreams"}},
		{"negative request timeout", func(c *config.Config) { c.Tenants[1].RequestTimeout = -1 }, []string{`tenant "globex"`, "request_timeout"}},
		{"every problem at once", func(c *config.Config) {
			c.Authz.Timeout = -1
			c.Tenants[0].Domains = nil
			c.Tenants[1].Domains = []string{""}
		}, []string{"authz.timeout", `tenant "acme"`, `tenant "globex"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(c)
			res, err := Translate(c)
			if err == nil {
				t.Fatalf("expected an error, got %d listeners", len(res.Listeners))
			}
			if res != nil {
				t.Error("resources returned with an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	if _, err := Translate(nil); err == nil {
		t.Error("nil config: expected an error")
	}
	if _, err := FromIR(nil); err == nil {
		t.Error("nil IR: expected an error")
	}
	if _, err := ToYAML(nil); err == nil {
		t.Error("nil resources: expected an error")
	}
}

// TestDeterministic: tenant and domain order in the config does not change
// the output.
func TestDeterministic(t *testing.T) {
	a := validConfig()
	b := validConfig()
	b.Tenants[0], b.Tenants[1] = b.Tenants[1], b.Tenants[0]
	b.Tenants[1].Domains = []string{"WWW.acme.test", "acme.test"}
	ya := mustYAML(t, a)
	yb := mustYAML(t, b)
	if !bytes.Equal(ya, yb) {
		t.Fatalf("outputs differ:\n%s", lineDiff(string(ya), string(yb)))
	}
	if again := mustYAML(t, a); !bytes.Equal(ya, again) {
		t.Fatal("same config, different output")
	}
}

func mustYAML(t *testing.T, c *config.Config) []byte {
	t.Helper()
	res, err := Translate(c)
	if err != nil {
		t.Fatal(err)
	}
	y, err := ToYAML(res)
	if err != nil {
		t.Fatal(err)
	}
	return y
}

// TestShape checks the contracts other parts rely on, independent of goldens.
func TestShape(t *testing.T) {
	res, err := Translate(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Listeners) != 1 || len(res.Routes) != 1 || len(res.Clusters) != 2 {
		t.Fatalf("got %d listeners, %d routes, %d clusters", len(res.Listeners), len(res.Routes), len(res.Clusters))
	}
	l := res.Listeners[0].(*listenerv3.Listener)
	if fs := l.FilterChains[0].Filters; len(fs) != 2 || fs[0].Name != ConnectionLimitFilterName || fs[1].Name != "envoy.filters.network.http_connection_manager" {
		t.Fatalf("network filters %v: want connection limit, then the HCM", fs)
	}
	hcm := &hcmv3.HttpConnectionManager{}
	if err := l.FilterChains[0].Filters[1].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range hcm.HttpFilters {
		names = append(names, f.Name)
	}
	want := "envoy.filters.http.health_check,envoy.filters.http.rbac,envoy.filters.http.cors,envoy.filters.http.ext_authz," +
		"envoy.filters.http.local_ratelimit,envoy.filters.http.compressor,envoy.filters.http.router"
	if got := strings.Join(names, ","); got != want {
		t.Errorf("filter order %s", got)
	}
	authz := &extauthzv3.ExtAuthz{}
	if err := hcm.HttpFilters[3].GetTypedConfig().UnmarshalTo(authz); err != nil {
		t.Fatal(err)
	}
	if authz.FailureModeAllow || authz.StatusOnError.GetCode() != 503 || authz.WithRequestBody != nil {
		t.Errorf("ext_authz not fail closed or body unexpectedly on: %v", authz)
	}

	rc := res.Routes[0].(*routev3.RouteConfiguration)
	var vhosts []string
	for _, v := range rc.VirtualHosts {
		vhosts = append(vhosts, v.Name)
		per := &extauthzv3.ExtAuthzPerRoute{}
		if err := v.TypedPerFilterConfig["envoy.filters.http.ext_authz"].UnmarshalTo(per); err != nil {
			t.Fatalf("%s: %v", v.Name, err)
		}
		if v.Name == UnknownHostName {
			if !per.GetDisabled() {
				t.Errorf("ext_authz enabled on %s", v.Name)
			}
			continue
		}
		if got := per.GetCheckSettings().GetContextExtensions()["tenant"]; "tenant_"+got != v.Name {
			t.Errorf("%s: tenant context extension %q", v.Name, got)
		}
	}
	if got := strings.Join(vhosts, ","); got != "tenant_acme,tenant_globex,unknown_host" {
		t.Errorf("virtual hosts %s", got)
	}
}

func TestExampleConfigTranslates(t *testing.T) {
	cfg, err := config.Load("../../examples/kailash.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := TranslateWith(cfg, readInputs(t, cfg)); err != nil {
		t.Fatal(err)
	}
}

// readInputs reads the certificate files cfg names, as the control plane
// does (xds.ReadInputs; this package cannot import it).
func readInputs(t *testing.T, cfg *config.Config) Inputs {
	t.Helper()
	in := Inputs{Certificates: map[string]KeyPair{}}
	for _, tn := range cfg.Tenants {
		if !tn.TLS.Enabled() {
			continue
		}
		cert, err := os.ReadFile(cfg.Path(tn.TLS.CertFile))
		if err != nil {
			t.Fatal(err)
		}
		key, err := os.ReadFile(cfg.Path(tn.TLS.KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		in.Certificates[tn.ID] = KeyPair{CertPEM: cert, KeyPEM: key}
	}
	return in
}
