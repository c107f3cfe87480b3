package main

import (
	"log/slog"
	"net/http"

	"github.com/kailash-gw/kailash/extauthz"
	"github.com/kailash-gw/kailash/extauthz/apikey"
	"github.com/kailash-gw/kailash/internal/audit"
	"github.com/kailash-gw/kailash/internal/config"
)

// serveAPIKeys adds the API keys admin API (wire.AdminAPIKeysPath) to
// authz's HTTP port when authz has API keys (authz.api_keys_file or
// authz.api_keys_in_redis) and an HTTP port; call it before Serve. The
// API writes the store as takes effect: the file or sessions.redis.
func serveAPIKeys(as *extauthz.Server, cfg *config.Config, aud *audit.Logger, log *slog.Logger) {
	keys := as.APIKeys()
	if keys == nil || cfg.Authz.HTTP.IsZero() {
		return
	}
	api := &apikey.API{Keys: keys, Audit: aud, Log: log, AdminTenant: cfg.TenantStore.AdminTenant, Tenant: as.HasTenant,
		Authenticate: func(r *http.Request) (apikey.Caller, error) {
			tenant, sub, err := as.VerifyCaller(r.Context(), r)
			return apikey.Caller{Tenant: tenant, Subject: sub}, err
		}}
	as.RouteHTTP(api.Routes)
}
