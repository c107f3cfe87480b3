package translate

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/kailash-gw/kailash/internal/config"
)

// TestCacheSameOutput: every golden input translates to the same resources
// with a cold cache, a warm one, and one warmed by other configs.
func TestCacheSameOutput(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "in", "*.yaml"))
	if err != nil || len(inputs) == 0 {
		t.Fatal(inputs, err)
	}
	var shared Cache
	for _, in := range inputs {
		cfg, err := config.Load(in)
		if err != nil {
			t.Fatal(err)
		}
		ins := readInputs(t, cfg)
		res, err := TranslateWith(cfg, ins)
		if err != nil {
			t.Fatal(err)
		}
		want, err := ToYAML(res)
		if err != nil {
			t.Fatal(err)
		}
		var own Cache
		for i, c := range []*Cache{&own, &own, &shared} {
			res, digests, err := TranslateCached(cfg, ins, c)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ToYAML(res)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s: cached translation %d differs", in, i)
			}
			for _, r := range res.Routes {
				if len(digests[r]) == 0 {
					t.Errorf("%s: no digest for a route configuration", in)
				}
			}
		}
	}
}

func cacheConfig(n int, routes string) *config.Config {
	cfg := &config.Config{
		Envoy:  config.Envoy{Listen: config.MustHostPort("127.0.0.1:10000"), Routes: routes},
		Authz:  config.Authz{GRPC: config.MustHostPort("127.0.0.1:9001"), HTTP: config.MustHostPort("127.0.0.1:9002"), Timeout: 1e9},
		Runner: config.Runner{HTTP: config.MustHostPort("127.0.0.1:9003")},
	}
	for i := range n {
		id := fmt.Sprintf("t%03d", i)
		cfg.Tenants = append(cfg.Tenants, config.Tenant{ID: id, Domains: []string{id + ".example.com"}})
	}
	return cfg
}

// TestCacheEdit: an edit re-translates the edited tenant only, the route
// digests follow every change, and reverting gives the first digests back.
func TestCacheEdit(t *testing.T) {
	t.Run("single", func(t *testing.T) {
		var c Cache
		cfg := cacheConfig(50, config.RoutesSingle)
		res1, d1, err := TranslateCached(cfg, Inputs{}, &c)
		if err != nil {
			t.Fatal(err)
		}
		rc1 := res1.Routes[0]
		edited := cacheConfig(50, config.RoutesSingle)
		off := false
		edited.Tenants[7].Active = &off
		res2, d2, err := TranslateCached(edited, Inputs{}, &c)
		if err != nil {
			t.Fatal(err)
		}
		rc2 := res2.Routes[0]
		if bytes.Equal(d1[rc1], d2[rc2]) {
			t.Fatal("digest unchanged by an edit")
		}
		v1, v2 := vhosts(rc1), vhosts(rc2)
		for i := range v1 {
			same := v1[i] == v2[i]
			if i == 7 && same {
				t.Error("edited tenant's virtual host reused")
			}
			if i != 7 && i < len(cfg.Tenants) && !same {
				t.Errorf("virtual host %d rebuilt", i)
			}
		}
		res3, d3, err := TranslateCached(cfg, Inputs{}, &c)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(d1[rc1], d3[res3.Routes[0]]) {
			t.Error("reverting the edit gives another digest")
		}
		checkBadKeepsCache(t, &c, config.RoutesSingle)
	})
	t.Run("per_tenant", func(t *testing.T) {
		var c Cache
		cfg := cacheConfig(50, config.RoutesPerTenant)
		res1, d1, err := TranslateCached(cfg, Inputs{}, &c)
		if err != nil {
			t.Fatal(err)
		}
		if len(res1.Routes) != 50 || len(res1.ScopedRoutes) != 50 {
			t.Fatalf("%d route configurations, %d scopes", len(res1.Routes), len(res1.ScopedRoutes))
		}
		edited := cacheConfig(50, config.RoutesPerTenant)
		off := false
		edited.Tenants[7].Active = &off
		res2, d2, err := TranslateCached(edited, Inputs{}, &c)
		if err != nil {
			t.Fatal(err)
		}
		for i := range res1.Routes {
			sameDigest := bytes.Equal(d1[res1.Routes[i]], d2[res2.Routes[i]])
			sameVH := vhosts(res1.Routes[i])[0] == vhosts(res2.Routes[i])[0]
			if i == 7 && (sameDigest || sameVH) {
				t.Errorf("edited tenant: same digest %v, same virtual host %v", sameDigest, sameVH)
			}
			if i != 7 && (!sameDigest || !sameVH) {
				t.Errorf("tenant %d: same digest %v, same virtual host %v", i, sameDigest, sameVH)
			}
		}
		res3, d3, err := TranslateCached(cfg, Inputs{}, &c)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(d1[res1.Routes[7]], d3[res3.Routes[7]]) {
			t.Error("reverting the edit gives another digest")
		}
		checkBadKeepsCache(t, &c, config.RoutesPerTenant)
	})
}

// checkBadKeepsCache: a bad config fails and leaves the cache as it was.
func checkBadKeepsCache(t *testing.T, c *Cache, routes string) {
	t.Helper()
	if len(c.vhs) != 50 {
		t.Errorf("cache holds %d virtual hosts, want 50", len(c.vhs))
	}
	bad := cacheConfig(50, routes)
	bad.Tenants[3].Domains = []string{"Not A Host"}
	if _, _, err := TranslateCached(bad, Inputs{}, c); err == nil {
		t.Fatal("bad config translated")
	}
	if len(c.vhs) != 50 {
		t.Errorf("cache holds %d virtual hosts after a bad config, want 50", len(c.vhs))
	}
}

func vhosts(r any) []any {
	rc := r.(interface{ GetVirtualHosts() []*routev3.VirtualHost }).GetVirtualHosts()
	out := make([]any, len(rc))
	for i, v := range rc {
		out[i] = v
	}
	return out
}
