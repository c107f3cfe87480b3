package ir

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/wire"
)

// Edge is what Envoy enforces for one tenant besides routing: it is the part
// of VirtualHost the HTTP filters read.
type Edge struct {
	// Active tenants are served; inactive ones are refused at the edge.
	Active bool
	// AdminAPI routes wire.AdminTenantsPath to the authz HTTP port, with
	// ext_authz on: the tenant is tenant_store.admin_tenant.
	AdminAPI bool `json:",omitempty"`
	// APIKeys routes the API keys admin API (wire.AdminAPIKeysPath) to the
	// authz HTTP port, with ext_authz on, when authz has API keys:
	// APIKeysOwn for the tenant's own keys, APIKeysAll on the admin
	// tenant's domains (every tenant's; the policy decides); "" none.
	APIKeys string `json:",omitempty"`
	// Plan is informational (a stat tag).
	Plan string
	// Cluster is the upstream cluster: RunnerCluster or the tenant's own.
	Cluster string
	// Timeout bounds each request routed upstream.
	Timeout time.Duration
	// StreamIdleTimeout, when not 0, replaces the listener's stream idle
	// timeout on the tenant's routes.
	StreamIdleTimeout time.Duration
	// Compression is false when the tenant turned the compressor off.
	Compression bool
	// CORS is nil when the tenant has no CORS policy.
	CORS *CORS
	// IPAllowlist, when not empty, is the only client networks admitted
	// (sorted, deduplicated).
	IPAllowlist []netip.Prefix
	// Local is the per-tenant token bucket; nil when unlimited.
	Local *TokenBucket
	// Quotas are the tenant's global quotas (config.Tenant.Quotas order).
	Quotas []config.Quota
	// TLS is the tenant's certificate on the HTTPS listener; nil when none.
	TLS *Certificate
}

// Edge.APIKeys values.
const (
	APIKeysOwn = "own"
	APIKeysAll = "all"
)

// CORS is a tenant's CORS policy, lists sorted.
type CORS struct {
	AllowOrigins     []string
	AllowMethods     []string
	AllowHeaders     []string
	ExposeHeaders    []string
	MaxAge           time.Duration
	AllowCredentials bool
}

// TokenBucket is Envoy's local rate limit: Burst tokens, refilled by
// PerSecond every second.
type TokenBucket struct {
	PerSecond uint32
	Burst     uint32
}

// RateLimit is the global rate-limit service as Envoy calls it.
type RateLimit struct {
	Address Address
	Timeout time.Duration
	// FailClosed refuses requests (503) when the service cannot decide.
	FailClosed bool
}

// Upstream is a tenant's own upstream cluster.
type Upstream struct {
	Name      string
	Addresses []Address
	// MaxConnections and MaxRequests are circuit breakers (0: Envoy's default).
	MaxConnections uint32
	MaxRequests    uint32
}

// Certificate is a tenant's certificate and key (PEM), and the secret name
// under which SDS delivers them.
type Certificate struct {
	SecretName string
	CertPEM    []byte
	KeyPEM     []byte
	// ServerNames are the SNI names that select this certificate: the
	// tenant's domains without ports, sorted, unique across tenants.
	ServerNames []string
	// ClientCA (PEM), when set, asks clients for a certificate and
	// verifies it; RequireClientCert refuses the handshake without one.
	ClientCA          []byte
	RequireClientCert bool
}

// HTTPS is the TLS listener.
type HTTPS struct {
	Listener Address
	// MinTLS13 is true for TLS 1.3 minimum, false for 1.2.
	MinTLS13 bool
	// RedirectHTTP redirects plain HTTP of tenants with a certificate.
	RedirectHTTP bool
	// Settings are the listener's connection settings (tls.listener over
	// envoy.listener, defaults applied).
	Settings ListenerSettings
}

// ListenerSettings are the connection manager's limits for one listener,
// every field set (config.Listener with its defaults).
type ListenerSettings struct {
	IdleTimeout           time.Duration
	StreamIdleTimeout     time.Duration
	RequestHeadersTimeout time.Duration
	RequestTimeout        time.Duration
	MaxConnections        uint32
	MaxConcurrentStreams  uint32
	Compression           bool
	// The client address: XFFNumTrustedHops or TrustedProxies (CIDRs
	// parsed), and the PROXY protocol.
	XFFNumTrustedHops uint32
	TrustedProxies    []netip.Prefix
	ProxyProtocol     bool
}

// buildListenerSettings is l, its unset fields taken from parent, then from
// the defaults. Negative durations are refused by config.Validate; here
// they fall back to the defaults too, so nothing is ever left unbounded.
func buildListenerSettings(l, parent config.Listener) ListenerSettings {
	dur := func(v, p, def time.Duration) time.Duration {
		switch {
		case v > 0:
			return v
		case p > 0:
			return p
		}
		return def
	}
	num := func(v, p, def uint32) uint32 {
		switch {
		case v > 0:
			return v
		case p > 0:
			return p
		}
		return def
	}
	s := ListenerSettings{
		IdleTimeout:           dur(l.IdleTimeout, parent.IdleTimeout, config.DefaultIdleTimeout),
		StreamIdleTimeout:     dur(l.StreamIdleTimeout, parent.StreamIdleTimeout, config.DefaultStreamIdleTimeout),
		RequestHeadersTimeout: dur(l.RequestHeadersTimeout, parent.RequestHeadersTimeout, config.DefaultRequestHeadersTimeout),
		RequestTimeout:        dur(l.RequestTimeout, parent.RequestTimeout, config.DefaultRequestTimeout),
		MaxConnections:        num(l.MaxConnections, parent.MaxConnections, config.DefaultMaxConnections),
		MaxConcurrentStreams:  num(l.MaxConcurrentStreams, parent.MaxConcurrentStreams, config.DefaultMaxConcurrentStreams),
		Compression:           true,
	}
	switch {
	case l.Compression != nil:
		s.Compression = *l.Compression
	case parent.Compression != nil:
		s.Compression = *parent.Compression
	}
	// The client address settings go together: a listener that sets
	// either takes neither from its parent.
	hops, proxies := l.XFFNumTrustedHops, l.TrustedProxies
	if hops == 0 && len(proxies) == 0 {
		hops, proxies = parent.XFFNumTrustedHops, parent.TrustedProxies
	}
	s.XFFNumTrustedHops = hops
	for _, c := range proxies {
		if p, err := netip.ParsePrefix(c); err == nil { // config.Validate refused the others
			s.TrustedProxies = append(s.TrustedProxies, p.Masked())
		}
	}
	switch {
	case l.ProxyProtocol != nil:
		s.ProxyProtocol = *l.ProxyProtocol
	case parent.ProxyProtocol != nil:
		s.ProxyProtocol = *parent.ProxyProtocol
	}
	return s
}

// RedirectPort is the port a redirect names: none for 443.
func (h *HTTPS) RedirectPort() uint32 {
	if h.Listener.Port == 443 {
		return 0
	}
	return h.Listener.Port
}

// RunnerCluster is the runner's cluster, every tenant's upstream unless it
// has upstreams of its own; RunnerRouteTimeout bounds a request routed to
// it.
const (
	RunnerCluster      = "kailash_runner"
	RunnerRouteTimeout = 60 * time.Second
)

// UpstreamClusterName is the cluster of a tenant with upstreams of its own.
func UpstreamClusterName(tenantID string) string { return "tenant_" + tenantID }

// SecretName is the SDS secret holding a tenant's certificate.
func SecretName(tenantID string) string { return "tenant_" + tenantID + "_cert" }

// buildEdge resolves a tenant's edge settings; problems go to tenantErr.
func buildEdge(cfg *config.Config, t *config.Tenant, ir *IR, tenantErr func(string, ...any)) Edge {
	e := Edge{Active: t.IsActive(), Plan: t.Plan, Cluster: RunnerCluster, Timeout: RunnerRouteTimeout,
		Compression: t.Compression == nil || *t.Compression,
		AdminAPI:    cfg.TenantStore.Enabled() && t.ID == cfg.TenantStore.AdminTenant && t.Source == "" && !cfg.Authz.HTTP.IsZero()}
	if cfg.Authz.APIKeysEnabled() && !cfg.Authz.HTTP.IsZero() {
		e.APIKeys = APIKeysOwn
		if t.ID == cfg.TenantStore.AdminTenant && t.Source == "" {
			e.APIKeys = APIKeysAll
		}
	}
	if t.RequestTimeout < 0 {
		tenantErr("request_timeout: must not be negative")
	} else if t.RequestTimeout > 0 {
		e.Timeout = t.RequestTimeout
	}
	if t.StreamIdleTimeout < 0 {
		tenantErr("stream_idle_timeout: must not be negative")
	} else {
		e.StreamIdleTimeout = t.StreamIdleTimeout
	}
	if len(t.Upstreams) > 0 {
		up := Upstream{
			Name:           UpstreamClusterName(t.ID),
			MaxConnections: t.Limits.MaxConnections,
			MaxRequests:    t.Limits.MaxRequests,
		}
		for _, u := range t.Upstreams {
			if err := checkAddr(u); err != nil {
				tenantErr("upstreams: %v", err)
				continue
			}
			up.Addresses = append(up.Addresses, addressOf(u))
		}
		slices.SortFunc(up.Addresses, func(a, b Address) int { return strings.Compare(a.String(), b.String()) })
		up.Addresses = slices.Compact(up.Addresses)
		if len(up.Addresses) > 0 && !sameKind(up.Addresses) {
			tenantErr("upstreams: mix IP addresses and host names in separate tenants (one cluster type each)")
		}
		e.Cluster = up.Name
		ir.Upstreams = append(ir.Upstreams, up)
	}
	if c := t.CORS; c.Enabled() {
		e.CORS = &CORS{
			AllowOrigins:     sortedUnique(c.AllowOrigins),
			AllowMethods:     sortedUnique(c.AllowMethods),
			AllowHeaders:     sortedUnique(lower(c.AllowHeaders)),
			ExposeHeaders:    sortedUnique(lower(c.ExposeHeaders)),
			MaxAge:           c.MaxAge,
			AllowCredentials: c.AllowCredentials,
		}
		if len(e.CORS.AllowMethods) == 0 {
			e.CORS.AllowMethods = []string{"DELETE", "GET", "HEAD", "PATCH", "POST", "PUT"}
		}
	}
	for _, p := range t.IPAllowlist {
		if err := p.Err(); err != nil {
			tenantErr("ip_allowlist: %v", err)
			continue
		}
		if !p.Prefix().IsValid() {
			tenantErr("ip_allowlist: empty entry")
			continue
		}
		e.IPAllowlist = append(e.IPAllowlist, p.Prefix())
	}
	slices.SortFunc(e.IPAllowlist, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
	e.IPAllowlist = slices.Compact(e.IPAllowlist)
	if l := t.Limits; l.RequestsPerSecond > 0 {
		burst := max(l.Burst, l.RequestsPerSecond)
		e.Local = &TokenBucket{PerSecond: l.RequestsPerSecond, Burst: burst}
	} else if l.Burst > 0 {
		tenantErr("limits.burst: needs limits.requests_per_second")
	}
	e.Quotas = t.Quotas()
	if len(e.Quotas) > 0 && cfg.RateLimit.GRPC.IsZero() {
		tenantErr("limits: global quotas need ratelimit.grpc (the rate-limit service address)")
	}
	for _, q := range e.Quotas {
		for _, en := range q.Entries {
			if en.Key == wire.DescRole && !config.ValidRole(en.Value) {
				tenantErr("limits.per_role_per_hour: %q is not a role name", en.Value)
			}
		}
	}
	return e
}

// buildGlobalEdge resolves the rate-limit service and the HTTPS listener.
func buildGlobalEdge(cfg *config.Config, ir *IR) []error {
	var errs []error
	if rl := cfg.RateLimit; !rl.GRPC.IsZero() {
		if err := checkAddr(rl.GRPC); err != nil {
			errs = append(errs, fmt.Errorf("ratelimit.grpc: %w", err))
		}
		timeout := rl.Timeout
		if timeout == 0 {
			timeout = config.DefaultRateLimitTimeout
		}
		if timeout < 0 {
			errs = append(errs, fmt.Errorf("ratelimit.timeout: must not be negative"))
		}
		switch rl.FailMode {
		case "", config.FailClosed, config.FailOpen:
		default:
			errs = append(errs, fmt.Errorf("ratelimit.fail_mode: %q: want open or closed", rl.FailMode))
		}
		ir.RateLimit = &RateLimit{
			Address:    addressOf(rl.GRPC),
			Timeout:    timeout,
			FailClosed: rl.FailMode != config.FailOpen,
		}
	}
	return errs
}

func sameKind(as []Address) bool {
	for _, a := range as[1:] {
		if a.IsIP() != as[0].IsIP() {
			return false
		}
	}
	return true
}

func sortedUnique(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

func lower(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = strings.ToLower(v)
	}
	return out
}
