package main

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kailash-gw/kailash/extauthz"
	"github.com/kailash-gw/kailash/internal/audit"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/tenantstore"
)

// tenantStore is a process's tenant store (tenant_store): the rows, their
// combination with the file (src), and the goroutine following them.
type tenantStore struct {
	store *tenantstore.Store
	src   *tenantstore.Source
	stop  context.CancelFunc
	done  <-chan struct{}
}

// openTenantStore connects to tenant_store.postgres_dsn, reads every
// stored tenant and starts following changes; cfg is the file's config,
// and the config returned is the servers' first: the file's tenants and
// the store's. Without a tenant store it returns (nil, cfg). A store that
// does not combine with the file (a tenant id or domain claimed twice) is
// an error: there is no last good combination to serve yet.
func openTenantStore(ctx context.Context, cfg *config.Config, log *slog.Logger) (*tenantStore, *config.Config, error) {
	if !cfg.TenantStore.Enabled() {
		return nil, cfg, nil
	}
	st, err := tenantstore.Open(ctx, cfg.TenantStore.PostgresDSN)
	if err != nil {
		return nil, nil, err
	}
	src := tenantstore.NewSource(cfg, log.With("component", "tenant_store"))
	fctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	resync := cfg.TenantStore.Resync
	if resync == 0 {
		resync = config.DefaultTenantStoreResync
	}
	done, err := st.Follow(fctx, tenantstore.FollowOptions{Resync: resync, Log: log.With("component", "tenant_store")}, src.SetDocs)
	if err != nil {
		stop()
		_ = st.Close()
		return nil, nil, err
	}
	ts := &tenantStore{store: st, src: src, stop: stop, done: done}
	first, err := src.Config()
	if err != nil {
		ts.Close()
		return nil, nil, err
	}
	log.Info("tenant store followed", "stored_tenants", len(first.Tenants)-len(cfg.Tenants), "file_tenants", len(cfg.Tenants))
	return ts, first, nil
}

// Close stops following and closes the connections (nil-safe).
func (t *tenantStore) Close() {
	if t == nil {
		return
	}
	t.stop()
	<-t.done
	_ = t.store.Close()
}

// source is t's Source (nil without a store).
func (t *tenantStore) source() *tenantstore.Source {
	if t == nil {
		return nil
	}
	return t.src
}

// register puts the store's metrics on each server's /metrics.
func (t *tenantStore) register(servers ...any) {
	if t == nil {
		return
	}
	for _, s := range servers {
		if r, ok := s.(interface{ Registry() *prometheus.Registry }); ok {
			t.src.Register(r.Registry())
		}
	}
}

// serveAdmin adds the tenant admin API to authz's HTTP port.
func (t *tenantStore) serveAdmin(as *extauthz.Server, cfg *config.Config, aud *audit.Logger, log *slog.Logger) {
	if t == nil {
		return
	}
	api := &tenantstore.API{Store: t.store, Source: t.src, Audit: aud, Log: log, AdminTenant: cfg.TenantStore.AdminTenant,
		Authenticate: func(r *http.Request) (tenantstore.Caller, error) {
			tenant, sub, err := as.VerifyCaller(r.Context(), r)
			return tenantstore.Caller{Tenant: tenant, Subject: sub}, err
		}}
	as.RouteHTTP(api.Routes)
}
