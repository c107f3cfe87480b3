package config

import (
	"net"
	"strings"
)

// Values of authz.tenant_from.
const (
	// TenantFromContextExtensions takes the tenant only from the route's
	// context_extensions (set by our control plane, or by
	// `kailash translate --ext-authz-only`'s static config).
	TenantFromContextExtensions = "context_extensions"
	// TenantFromHost also maps the request's host (:authority, port
	// stripped, lowercased) to the tenant whose domains list it, by exact
	// match, when the route sets no tenant: for meshes that cannot set
	// context extensions (Istio's CUSTOM provider, Envoy Gateway). The
	// client chooses the host, so this is sound only when the same host
	// also selects the tenant's routes and upstreams
	// (docs/integrations.md).
	TenantFromHost = "host"
)

// TenantFromHostEnabled reports whether authz.tenant_from is host.
func (c *Config) TenantFromHostEnabled() bool { return c.Authz.TenantFrom == TenantFromHost }

func (c *Config) validateTenantFrom(at func(line int, format string, args ...any)) {
	switch c.Authz.TenantFrom {
	case "", TenantFromContextExtensions:
		return
	case TenantFromHost:
	default:
		at(0, "authz.tenant_from: %q: want %s or %s", c.Authz.TenantFrom, TenantFromContextExtensions, TenantFromHost)
		return
	}
	for i := range c.Tenants {
		t := &c.Tenants[i]
		for _, d := range t.Domains {
			if !ExactDomain(d) {
				at(t.Line, "tenant %q: domains: %q: authz.tenant_from host matches exact host names only (no \"*\", no port)", t.ID, d)
			}
		}
	}
}

// HostTenants maps each tenant's domains (lowercased) to its id, for
// authz.tenant_from host.
func (c *Config) HostTenants() map[string]string {
	m := map[string]string{}
	for i := range c.Tenants {
		for _, d := range c.Tenants[i].Domains {
			if ExactDomain(d) {
				m[strings.ToLower(d)] = c.Tenants[i].ID
			}
		}
	}
	return m
}

// RequestHost is the host of an :authority (or Host) value as
// authz.tenant_from host compares it: port stripped (IPv6 brackets too),
// lowercased.
func RequestHost(authority string) string {
	h := authority
	if host, _, err := net.SplitHostPort(authority); err == nil {
		h = host
	} else if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	return strings.ToLower(h)
}
