package xds

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"

	"github.com/kailash-gw/kailash/internal/config"
)

// patchConfig has n tenants on per-tenant routes, some with their own
// upstreams, CORS and a local limit.
func patchConfig(n int) *config.Config {
	cfg := testConfig()
	cfg.Envoy.Routes = config.RoutesPerTenant
	cfg.Authz.HTTP = config.MustHostPort("127.0.0.1:9192")
	cfg.Tenants = nil
	for i := range n {
		id := fmt.Sprintf("t%02d", i)
		t := config.Tenant{ID: id, Domains: []string{id + ".localhost", "www." + id + ".example"}}
		if i%3 == 0 {
			t.Upstreams = []config.HostPort{config.MustHostPort(fmt.Sprintf("10.0.0.%d:80", i+1))}
		}
		if i%4 == 0 {
			t.CORS = config.CORS{AllowOrigins: []string{"https://app." + id + ".example"}}
			t.Limits = config.TenantLimits{RequestsPerSecond: 10}
		}
		cfg.Tenants = append(cfg.Tenants, t)
	}
	return cfg
}

// edit is cfg with its tenants copied and f applied to them.
func edit(cfg *config.Config, f func([]config.Tenant)) *config.Config {
	c := *cfg
	c.Tenants = append([]config.Tenant(nil), cfg.Tenants...)
	f(c.Tenants)
	return &c
}

// TestPatchEqualsFull: a server that receives a series of tenant edits
// (patched into its snapshot) serves exactly what a fresh server translating
// each config whole serves: the same version, the same per-resource versions
// and equal resources. The edits are ones a patch makes (checked: the test
// fails if they fall back to a full translation).
func TestPatchEqualsFull(t *testing.T) {
	cfg := patchConfig(30)
	s := newServer(t, cfg)
	off := false
	steps := []struct {
		name string
		f    func([]config.Tenant)
	}{
		{"deactivate", func(ts []config.Tenant) { ts[4].Active = &off }},
		{"moved in the file", func(ts []config.Tenant) {
			for i := range ts {
				ts[i].Line += 3
			}
		}},
		{"drop and add a domain", func(ts []config.Tenant) { ts[7].Domains = []string{"T07.localhost", "new.t07.example"} }},
		{"move a domain between tenants", func(ts []config.Tenant) {
			ts[8].Domains = []string{"t08.localhost"}
			ts[9].Domains = append([]string{"www.t08.example"}, ts[9].Domains...)
		}},
		{"add upstreams", func(ts []config.Tenant) {
			ts[10].Upstreams = []config.HostPort{config.MustHostPort("10.1.0.1:8080"), config.MustHostPort("10.1.0.2:8080")}
		}},
		{"remove upstreams", func(ts []config.Tenant) { ts[12].Upstreams = nil }},
		{"cors and limits", func(ts []config.Tenant) {
			ts[13].CORS = config.CORS{AllowOrigins: []string{"https://x.example"}, AllowCredentials: true}
			ts[13].Limits = config.TenantLimits{RequestsPerSecond: 5, Burst: 9}
		}},
		{"reactivate", func(ts []config.Tenant) { ts[4].Active = nil }},
	}
	// Tenants added and removed (as a tenant store change makes them), by
	// id wherever they are in the list.
	resize := []struct {
		name string
		f    func([]config.Tenant) []config.Tenant
	}{
		{"add a tenant at the end", func(ts []config.Tenant) []config.Tenant {
			return append(ts, config.Tenant{ID: "zz", Domains: []string{"zz.localhost"},
				Upstreams: []config.HostPort{config.MustHostPort("10.2.0.1:80")}})
		}},
		{"add a tenant in the middle", func(ts []config.Tenant) []config.Tenant {
			return slices.Insert(ts, 5, config.Tenant{ID: "mm", Domains: []string{"mm.localhost", "www.mm.example"}})
		}},
		{"remove a tenant with upstreams", func(ts []config.Tenant) []config.Tenant {
			return slices.DeleteFunc(ts, func(t config.Tenant) bool { return t.ID == "t03" })
		}},
		{"remove one, another takes its domain", func(ts []config.Tenant) []config.Tenant {
			ts = slices.DeleteFunc(ts, func(t config.Tenant) bool { return t.ID == "t11" })
			i := slices.IndexFunc(ts, func(t config.Tenant) bool { return t.ID == "t14" })
			ts[i].Domains = append(ts[i].Domains, "t11.localhost")
			return ts
		}},
		{"reorder, add and remove at once", func(ts []config.Tenant) []config.Tenant {
			slices.Reverse(ts)
			ts = slices.DeleteFunc(ts, func(t config.Tenant) bool { return t.ID == "zz" })
			return append(ts, config.Tenant{ID: "nn", Domains: []string{"nn.localhost"}})
		}},
	}
	for _, r := range resize {
		steps = append(steps, struct {
			name string
			f    func([]config.Tenant)
		}{name: r.name})
	}
	for i, st := range steps {
		var next *config.Config
		if st.f != nil {
			next = edit(s.cfg, st.f)
		} else {
			next = edit(s.cfg, func([]config.Tenant) {})
			next.Tenants = resize[i-(len(steps)-len(resize))].f(next.Tenants)
		}
		if _, ok, err := patchTenants(s.cfg, next, s.snap); !ok || err != nil {
			t.Fatalf("%s: not patched (%v, %v)", st.name, ok, err)
		}
		before := s.Version()
		if err := s.Update(next); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if st.name != "moved in the file" && s.Version() == before {
			t.Errorf("%s: version unchanged", st.name)
		}
		if st.name == "moved in the file" && s.Version() != before {
			t.Errorf("%s: version changed (nothing Envoy sees did)", st.name)
		}
		fresh, err := New(next, Options{Logger: discardLogger()})
		if err != nil {
			t.Fatalf("%s: fresh: %v", st.name, err)
		}
		_ = fresh.Close()
		sameSnapshots(t, st.name, s.snap, fresh.snap)
		if s.Version() != fresh.Version() {
			t.Errorf("%s: patched version %s, fresh %s", st.name, s.Version(), fresh.Version())
		}
	}
}

// TestPatchRefuses: a patched edit is checked as a full translation would
// be: a domain another tenant serves, a tenant error; the last good
// snapshot keeps serving. Edits a patch cannot make take the full path.
func TestPatchRefuses(t *testing.T) {
	cfg := patchConfig(10)
	s := newServer(t, cfg)
	v0 := s.Version()
	for name, f := range map[string]func([]config.Tenant){
		"another tenant's domain": func(ts []config.Tenant) { ts[2].Domains = append(ts[2].Domains, "T05.localhost") },
		"twice in one tenant":     func(ts []config.Tenant) { ts[2].Domains = append(ts[2].Domains, "t02.localhost") },
		"bad domain":              func(ts []config.Tenant) { ts[3].Domains = []string{"not a host"} },
		"burst without rate":      func(ts []config.Tenant) { ts[1].Limits = config.TenantLimits{Burst: 3} },
	} {
		next := edit(cfg, f)
		_, ok, perr := patchTenants(s.cfg, next, s.snap)
		if !ok || perr == nil {
			t.Errorf("%s: patch: ok %v, err %v", name, ok, perr)
		}
		if err := s.Update(next); err == nil || s.Version() != v0 {
			t.Errorf("%s: Update: %v, version %s (want %s)", name, err, s.Version(), v0)
		} else if !strings.Contains(err.Error(), "tenant \"t0") {
			t.Errorf("%s: error names no tenant: %v", name, err)
		}
	}
	for name, next := range map[string]*config.Config{
		"tenant id twice": func() *config.Config {
			c := edit(cfg, func([]config.Tenant) {})
			c.Tenants = append(c.Tenants, config.Tenant{ID: "t02", Domains: []string{"zz.localhost"}})
			return c
		}(),
		"tenant with a certificate added": func() *config.Config {
			c := edit(cfg, func([]config.Tenant) {})
			c.Tenants = append(c.Tenants, config.Tenant{ID: "zz", Domains: []string{"zz.localhost"}, TLS: config.TenantTLS{CertFile: "x.pem"}})
			return c
		}(),
		"no tenants left": func() *config.Config {
			c := edit(cfg, func([]config.Tenant) {})
			c.Tenants = nil
			return c
		}(),
		"global change": func() *config.Config {
			c := edit(cfg, func(ts []config.Tenant) { ts[0].Active = new(bool) })
			c.Authz.Timeout *= 2
			return c
		}(),
		"single table": func() *config.Config {
			c := edit(cfg, func(ts []config.Tenant) { ts[0].Active = new(bool) })
			c.Envoy.Routes = config.RoutesSingle
			return c
		}(),
		"a certificate": edit(cfg, func(ts []config.Tenant) { ts[0].TLS.CertFile = "x.pem" }),
	} {
		if _, ok, _ := patchTenants(s.cfg, next, s.snap); ok {
			t.Errorf("%s: patched, want the full translation", name)
		}
	}
}

// typeURLs are the type URLs by response type.
var typeURLs = func() (out [types.UnknownType]string) {
	for i := range out {
		out[i], _ = cachev3.GetResponseTypeURL(types.ResponseType(i))
	}
	return out
}()

// sameSnapshots fails unless a and b hold the same resources at the same
// versions.
func sameSnapshots(t *testing.T, step string, a, b *snapshot) {
	t.Helper()
	if a.sum != b.sum {
		t.Errorf("%s: sums differ", step)
	}
	for i := range types.UnknownType {
		if len(a.plain[i]) != len(b.plain[i]) || len(a.versions[i]) != len(b.versions[i]) || len(a.GetResourcesAndTTL(typeURLs[i])) != len(b.GetResourcesAndTTL(typeURLs[i])) {
			t.Errorf("%s: type %d: %d/%d resources, want %d/%d", step, i, len(a.plain[i]), len(a.versions[i]), len(b.plain[i]), len(b.versions[i]))
			continue
		}
		for name, r := range b.plain[i] {
			if !proto.Equal(a.plain[i][name], r) || a.versions[i][name] != b.versions[i][name] || a.GetResourcesAndTTL(typeURLs[i])[name].Resource != a.plain[i][name] {
				t.Errorf("%s: type %d: %s differs (version %q, want %q)", step, i, name, a.versions[i][name], b.versions[i][name])
			}
		}
	}
	if err := consistent(a); err != nil {
		t.Errorf("%s: %v", step, err)
	}
}

// consistent runs the snapshot cache's own check on s's resources.
func consistent(s *snapshot) error {
	byType := map[string][]types.Resource{}
	for i := range types.UnknownType {
		typ, _ := cachev3.GetResponseTypeURL(i)
		for _, r := range s.plain[i] {
			byType[typ] = append(byType[typ], r)
		}
	}
	cs, err := cachev3.NewSnapshot("x", byType)
	if err != nil {
		return err
	}
	return cs.Consistent()
}
