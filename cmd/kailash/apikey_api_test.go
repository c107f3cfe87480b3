package main

import (
	"net/http"
	"testing"

	"github.com/kailash-gw/kailash/extauthz/apikey"
	"github.com/kailash-gw/kailash/internal/tenantstore"
)

// TestAdminAPIsShareTheMux: the tenant API and the API keys API are
// registered on authz's one mux (both below /v1/admin/tenants); a pattern
// conflict would panic here rather than at start.
func TestAdminAPIsShareTheMux(t *testing.T) {
	mux := http.NewServeMux()
	(&tenantstore.API{}).Routes(mux)
	(&apikey.API{}).Routes(mux)
	for path, want := range map[string]string{
		"/v1/admin/tenants/acme":                 "GET /v1/admin/tenants/{id}",
		"/v1/admin/tenants/acme/api-keys":        "GET /v1/admin/tenants/{tenant}/api-keys",
		"/v1/admin/tenants/acme/api-keys/k1":     "GET /v1/admin/tenants/{tenant}/api-keys/{id}",
		"/v1/admin/tenants/api-keys/api-keys/k1": "GET /v1/admin/tenants/{tenant}/api-keys/{id}",
	} {
		r, _ := http.NewRequest("GET", path, nil)
		if _, p := mux.Handler(r); p != want {
			t.Errorf("%s: pattern %q, want %q", path, p, want)
		}
	}
}
