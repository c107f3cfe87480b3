package translate

import (
	"regexp"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/kailash-gw/kailash/internal/config"
)

// TestAPIKeysRoutes: with API keys and authz.http, the admin tenant's
// virtual host routes every tenant's API keys to authz's HTTP port, any
// other tenant's its own only; without API keys there is no such route.
func TestAPIKeysRoutes(t *testing.T) {
	route := func(c *config.Config, vh string) *routev3.Route {
		t.Helper()
		res, err := Translate(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range vhost(t, routeConfig(t, res), vh).Routes {
			if r.Name == "admin_api_keys" {
				return r
			}
		}
		return nil
	}
	c := validConfig()
	c.Authz.HTTP = config.MustHostPort("127.0.0.1:9192")
	if r := route(c, "tenant_acme"); r != nil {
		t.Fatalf("an API keys route without API keys: %v", r)
	}
	c.Authz.APIKeysFile = "apikeys.json"
	c.TenantStore.AdminTenant = "acme"

	all := route(c, "tenant_acme")
	if all == nil || all.GetRoute().GetCluster() != AuthzHTTPCluster {
		t.Fatalf("admin tenant: %v", all)
	}
	re := regexp.MustCompile("^(?:" + all.GetMatch().GetSafeRegex().GetRegex() + ")$") // Envoy matches the whole path
	for path, want := range map[string]bool{
		"/v1/admin/tenants/globex/api-keys":           true,
		"/v1/admin/tenants/globex/api-keys/k1":        true,
		"/v1/admin/tenants/globex/api-keys/k1/rotate": true,
		"/v1/admin/tenants/globex":                    false,
		"/v1/admin/tenants/globex/api-keysx":          false,
		"/v1/admin/tenants//api-keys":                 false,
		"/v1/workflows":                               false,
	} {
		if re.MatchString(path) != want {
			t.Errorf("admin tenant's API keys route matches %s: %v, want %v", path, !want, want)
		}
	}
	own := route(c, "tenant_globex")
	if own == nil || own.GetMatch().GetPathSeparatedPrefix() != "/v1/admin/tenants/globex/api-keys" || own.GetRoute().GetCluster() != AuthzHTTPCluster {
		t.Fatalf("other tenant: %v", own)
	}
	// Its route comes before the tenant's main route ("/").
	res, _ := Translate(c)
	routes := vhost(t, routeConfig(t, res), "tenant_globex").Routes
	if routes[len(routes)-1].GetMatch().GetPrefix() != "/" || routes[len(routes)-2].Name != "admin_api_keys" {
		t.Errorf("route order: %v", routes)
	}
}
