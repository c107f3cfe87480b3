package config

import (
	"crypto/x509"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/kailash-gw/kailash/internal/wire"
)

// This file holds what the edge (Envoy) enforces per tenant: activity,
// upstreams, TLS certificates, CORS, the IP allowlist, request timeouts and
// rate limits; plus the config of the rate-limit service and the HTTPS
// listener. xds translates it into Envoy resources and extauthz/ratelimit
// turns the global quotas into rules: Quotas is the contract both read.

// TenantTLS is a tenant's certificate, served by SNI on the HTTPS listener.
// Paths are relative to the config file; changes are pushed without restarts.
type TenantTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile turns on client certificates for the tenant's HTTPS
	// host: Envoy asks for one and verifies it against these CAs (PEM), and
	// authz maps it to a service account by ClientIdentities (verifying the
	// chain again, against this tenant's CAs). Re-read when it changes.
	ClientCAFile string `yaml:"client_ca_file"`
	// RequireClientCertificate refuses the TLS handshake without a valid
	// client certificate, and authz refuses one no identity maps (401).
	RequireClientCertificate bool `yaml:"require_client_certificate"`
	// ClientIdentities map a certificate to a service account: by its
	// SPIFFE ID (a URI SAN) or its subject's common name.
	ClientIdentities []ClientIdentity `yaml:"client_identities"`
}

// ClientIdentity maps client certificates to a service account.
type ClientIdentity struct {
	// SPIFFEID (spiffe://trust-domain/path) or Subject (the subject CN):
	// exactly one.
	SPIFFEID string `yaml:"spiffe_id"`
	Subject  string `yaml:"subject"`
	// Name is the service account: the identity is sa:<name>.
	Name  string   `yaml:"name"`
	Roles []string `yaml:"roles"`
}

// Enabled reports whether the tenant has a certificate.
func (t TenantTLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// CORS is a tenant's cross-origin policy. Empty AllowOrigins means no CORS.
type CORS struct {
	// AllowOrigins are exact origins ("https://app.example.com") or "*".
	AllowOrigins  []string      `yaml:"allow_origins"`
	AllowMethods  []string      `yaml:"allow_methods"`
	AllowHeaders  []string      `yaml:"allow_headers"`
	ExposeHeaders []string      `yaml:"expose_headers"`
	MaxAge        time.Duration `yaml:"max_age"`
	// AllowCredentials needs explicit origins (not "*").
	AllowCredentials bool `yaml:"allow_credentials"`
}

// Enabled reports whether the tenant has a CORS policy.
func (c CORS) Enabled() bool { return len(c.AllowOrigins) > 0 }

// TenantLimits are a tenant's edge limits. Zero means no limit.
type TenantLimits struct {
	// RequestsPerSecond and Burst are Envoy's per-tenant local token bucket
	// (per Envoy process); Burst defaults to RequestsPerSecond.
	RequestsPerSecond uint32 `yaml:"requests_per_second"`
	Burst             uint32 `yaml:"burst"`
	// MaxAPICallsPerDay is a global quota for the whole tenant.
	MaxAPICallsPerDay uint64 `yaml:"max_api_calls_per_day"`
	// PerUserPerHour is a global quota for each user of the tenant.
	PerUserPerHour uint64 `yaml:"per_user_per_hour"`
	// PerRolePerHour is a global quota shared by all callers holding a role.
	PerRolePerHour map[string]uint64 `yaml:"per_role_per_hour"`
	// MaxConnections and MaxRequests are the circuit breakers of the tenant's
	// upstream cluster (only with upstreams of its own).
	MaxConnections uint32 `yaml:"max_connections"`
	MaxRequests    uint32 `yaml:"max_requests"`
	// AuthPerMinute is a global quota on the tenant's login endpoints
	// (/auth/*), per client IP and minute. Those requests run without
	// ext_authz, so they never count against the other quotas; this is
	// their own. Unset: DefaultAuthPerMinute when ratelimit.grpc is set;
	// 0 turns it off.
	AuthPerMinute *uint64 `yaml:"auth_per_minute"`
}

// Listener is how Envoy's connection manager treats the clients of one
// listener (envoy.listener for the plain HTTP listener, tls.listener for
// HTTPS, whose unset fields inherit envoy.listener's). Zero means the
// default; the defaults follow Envoy's edge best practices.
type Listener struct {
	// IdleTimeout closes a connection with no active request (default 1h).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// StreamIdleTimeout resets a request on which nothing was sent or
	// received for this long (default 5m).
	StreamIdleTimeout time.Duration `yaml:"stream_idle_timeout"`
	// RequestHeadersTimeout is how long a client has to send all of a
	// request's headers (default 10s): slow-header clients are cut off.
	RequestHeadersTimeout time.Duration `yaml:"request_headers_timeout"`
	// RequestTimeout is how long a client has to send the whole request,
	// body included (default 5m). It stops once the response starts, so it
	// does not cut WebSockets or event streams.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// MaxConnections is the listener's cap on open client connections
	// (default 10000); new connections beyond it are closed at once.
	MaxConnections uint32 `yaml:"max_connections"`
	// MaxConcurrentStreams bounds HTTP/2 requests per connection (default 100).
	MaxConcurrentStreams uint32 `yaml:"max_concurrent_streams"`
	// Compression gzips responses for clients that accept it (default true).
	Compression *bool `yaml:"compression"`
	// XFFNumTrustedHops is how many proxies in front of Envoy (a cloud load
	// balancer, a CDN) append the address they saw to X-Forwarded-For: the
	// client is the address that many entries from the right. 0 (the
	// default): the client is the connection's peer and X-Forwarded-For is
	// not believed. IP allowlists, the remote_address rate-limit key, the
	// policy's input.attributes.source and the access log all use it.
	XFFNumTrustedHops uint32 `yaml:"xff_num_trusted_hops"`
	// TrustedProxies are the proxies' networks (CIDRs) instead: when the
	// connection's peer is in one, X-Forwarded-For is read from the right,
	// skipping the addresses in them; the first other address is the
	// client. A peer outside them is the client. Not with
	// xff_num_trusted_hops.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// ProxyProtocol requires a PROXY protocol header (v1 or v2, as AWS NLB,
	// HAProxy and most TCP load balancers send) on every connection: the
	// address it names is the connection's peer. A connection without one
	// is closed.
	ProxyProtocol *bool `yaml:"proxy_protocol"`
}

// RateLimit is the global rate-limit service (envoy.service.ratelimit.v3).
type RateLimit struct {
	// GRPC is where the service listens and where Envoy calls it.
	GRPC HostPort `yaml:"grpc"`
	// HTTP serves /metrics, /healthz and /readyz (optional).
	HTTP HostPort `yaml:"http"`
	// Backend is "memory" (default, one process) or "redis" (shared).
	Backend string `yaml:"backend"`
	Redis   Redis  `yaml:"redis"`
	// FailMode is what happens when the counters cannot be reached:
	// "closed" (default: refuse with 503) or "open" (allow).
	FailMode string `yaml:"fail_mode"`
	// Timeout is how long Envoy waits for the service (default 100ms).
	Timeout time.Duration `yaml:"timeout"`
	// TLS, when set, requires mutual TLS on the gRPC port (mtls.go).
	TLS ServerTLS `yaml:"tls"`
}

// Redis is the shared counter store.
type Redis struct {
	Addr HostPort `yaml:"addr"`
	// PasswordEnv names an environment variable holding the password (the
	// password itself never sits in the file).
	PasswordEnv string `yaml:"password_env"`
	DB          int    `yaml:"db"`
	// Timeout bounds each Redis operation (default 25ms), so an unreachable
	// Redis turns into the fail mode well within 50ms.
	Timeout time.Duration `yaml:"timeout"`
}

// EdgeTLS is the HTTPS listener.
type EdgeTLS struct {
	// Listen is the HTTPS listener address (an IP); empty means no HTTPS.
	Listen HostPort `yaml:"listen"`
	// MinVersion is "1.2" or "1.3" (default "1.3").
	MinVersion string `yaml:"min_version"`
	// RedirectHTTP answers plain HTTP on envoy.listen with a redirect to HTTPS
	// for tenants that have a certificate.
	RedirectHTTP bool `yaml:"redirect_http"`
	// Listener is the HTTPS listener's connection settings; unset fields
	// inherit envoy.listener's.
	Listener Listener `yaml:"listener"`
}

// Rate-limit settings (the descriptor contract is in internal/wire).
const (
	FailOpen   = "open"
	FailClosed = "closed"

	BackendMemory = "memory"
	BackendRedis  = "redis"

	DefaultRateLimitTimeout = 100 * time.Millisecond
	DefaultRedisTimeout     = 25 * time.Millisecond
	DefaultTLSMinVersion    = "1.3"

	// DefaultAuthPerMinute is the login quota per client IP and tenant when
	// the rate-limit service is configured: enough for a busy NAT'ed office
	// logging in, far too few for password spraying or draining the service.
	DefaultAuthPerMinute uint64 = 120

	// Listener defaults (Envoy's edge best practices).
	DefaultIdleTimeout           = time.Hour
	DefaultStreamIdleTimeout     = 5 * time.Minute
	DefaultRequestHeadersTimeout = 10 * time.Second
	DefaultRequestTimeout        = 5 * time.Minute
	DefaultMaxConnections        = 10000
	DefaultMaxConcurrentStreams  = 100
)

// Unit is a quota window.
type Unit string

// Units of quotas.
const (
	Second Unit = "second"
	Minute Unit = "minute"
	Hour   Unit = "hour"
	Day    Unit = "day"
)

// Duration is the unit's window length.
func (u Unit) Duration() time.Duration {
	switch u {
	case Second:
		return time.Second
	case Minute:
		return time.Minute
	case Hour:
		return time.Hour
	case Day:
		return 24 * time.Hour
	}
	return 0
}

// DescriptorEntry is one key/value of a rate-limit descriptor. Value ""
// matches any value (each distinct value has its own counter).
type DescriptorEntry struct {
	Key, Value string
}

// Quota is one global limit of a tenant, as a descriptor pattern.
type Quota struct {
	// Name is stable and readable, e.g. "acme/user/hour".
	Name    string
	Entries []DescriptorEntry
	Limit   uint64
	Unit    Unit
	// Auth quotas count the login endpoints (/auth/*) only; the others
	// count every other request and never the login endpoints.
	Auth bool
}

// Quotas are the tenant's global quotas in a fixed order: the daily tenant
// quota, the per-user quota, per-role quotas by role name, then the login
// quota. Descriptors are [tenant, quota=day], [tenant, user=*],
// [tenant, role=R] and [tenant, quota=auth, remote_address=*].
func (t *Tenant) Quotas() []Quota {
	var out []Quota
	l := t.Limits
	if l.MaxAPICallsPerDay > 0 {
		out = append(out, Quota{
			Name:    t.ID + "/tenant/day",
			Entries: []DescriptorEntry{{wire.DescTenant, t.ID}, {wire.DescQuota, string(Day)}},
			Limit:   l.MaxAPICallsPerDay, Unit: Day,
		})
	}
	if l.PerUserPerHour > 0 {
		out = append(out, Quota{
			Name:    t.ID + "/user/hour",
			Entries: []DescriptorEntry{{wire.DescTenant, t.ID}, {wire.DescUser, ""}},
			Limit:   l.PerUserPerHour, Unit: Hour,
		})
	}
	roles := make([]string, 0, len(l.PerRolePerHour))
	for r := range l.PerRolePerHour {
		roles = append(roles, r)
	}
	slices.Sort(roles)
	for _, r := range roles {
		if l.PerRolePerHour[r] == 0 {
			continue
		}
		out = append(out, Quota{
			Name:    t.ID + "/role/" + r + "/hour",
			Entries: []DescriptorEntry{{wire.DescTenant, t.ID}, {wire.DescRole, r}},
			Limit:   l.PerRolePerHour[r], Unit: Hour,
		})
	}
	if l.AuthPerMinute != nil && *l.AuthPerMinute > 0 {
		out = append(out, Quota{
			Name:    t.ID + "/auth/minute",
			Entries: []DescriptorEntry{{wire.DescTenant, t.ID}, {wire.DescQuota, wire.QuotaAuth}, {wire.DescRemoteAddress, ""}},
			Limit:   *l.AuthPerMinute, Unit: Minute, Auth: true,
		})
	}
	return out
}

// setEdgeDefaults gives every tenant the default login quota when the
// rate-limit service is configured.
func (c *Config) setEdgeDefaults() {
	if c.RateLimit.GRPC.IsZero() {
		return
	}
	for i := range c.Tenants {
		if l := &c.Tenants[i].Limits; l.AuthPerMinute == nil {
			n := DefaultAuthPerMinute
			l.AuthPerMinute = &n
		}
	}
}

// IsActive reports whether the tenant is served (the default).
func (t *Tenant) IsActive() bool { return t.Active == nil || *t.Active }

// HasGlobalQuotas reports whether any tenant needs the rate-limit service.
func (c *Config) HasGlobalQuotas() bool {
	for i := range c.Tenants {
		if len(c.Tenants[i].Quotas()) > 0 {
			return true
		}
	}
	return false
}

var (
	methodRe = regexp.MustCompile(`^[A-Z]+$`)
	headerRe = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_` + "`" + `|~-]+$`)
)

// validateEdge checks the edge fields of every tenant and the ratelimit and
// tls sections.
func (c *Config) validateEdge(at func(line int, format string, args ...any)) {
	addr := func(field string, v HostPort) {
		if err := v.Err(); err != nil {
			at(v.Line(), "%s: %v", field, err)
		}
	}
	rl := c.RateLimit
	addr("ratelimit.grpc", rl.GRPC)
	addr("ratelimit.http", rl.HTTP)
	switch rl.Backend {
	case "", BackendMemory:
	case BackendRedis:
		if rl.Redis.Addr.IsZero() {
			at(0, "ratelimit.redis.addr: required with backend redis")
		} else {
			addr("ratelimit.redis.addr", rl.Redis.Addr)
		}
	default:
		at(0, "ratelimit.backend: %q: want memory or redis", rl.Backend)
	}
	switch rl.FailMode {
	case "", FailOpen, FailClosed:
	default:
		at(0, "ratelimit.fail_mode: %q: want open or closed", rl.FailMode)
	}
	if rl.Timeout < 0 {
		at(0, "ratelimit.timeout: must not be negative")
	}
	if rl.Redis.Timeout < 0 {
		at(0, "ratelimit.redis.timeout: must not be negative")
	}
	tls := c.TLS
	addr("tls.listen", tls.Listen)
	switch tls.MinVersion {
	case "", "1.2", "1.3":
	default:
		at(0, "tls.min_version: %q: want 1.2 or 1.3", tls.MinVersion)
	}
	if tls.RedirectHTTP && tls.Listen.IsZero() {
		at(0, "tls.redirect_http: needs tls.listen")
	}
	validateListener(at, "envoy.listener", c.Envoy.Listener)
	validateListener(at, "tls.listener", tls.Listener)

	for i := range c.Tenants {
		t := &c.Tenants[i]
		name := tenantName(t.ID)
		if t.ID == "" {
			name = fmt.Sprintf("tenants[%d]", i)
		}
		c.validateTenantEdge(at, t, name)
		if len(t.Quotas()) > 0 && rl.GRPC.IsZero() {
			at(t.Line, "%s: limits: global quotas need ratelimit.grpc (the rate-limit service address)", name)
		}
	}
}

func (c *Config) validateTenantEdge(at func(line int, format string, args ...any), t *Tenant, name string) {
	for _, u := range t.Upstreams {
		if err := u.Err(); err != nil {
			at(lineOr(u.Line(), t.Line), "%s: upstreams: %v", name, err)
		} else if u.IsZero() {
			at(t.Line, "%s: upstreams: empty entry (want host:port)", name)
		}
	}
	if t.TLS.Enabled() {
		for _, f := range []struct{ field, path string }{{"tls.cert_file", t.TLS.CertFile}, {"tls.key_file", t.TLS.KeyFile}} {
			if f.path == "" {
				at(t.Line, "%s: %s: required with a certificate", name, f.field)
				continue
			}
			if _, err := os.Stat(c.Path(f.path)); err != nil {
				at(t.Line, "%s: %s: %v", name, f.field, err)
			}
		}
		if c.TLS.Listen.IsZero() {
			at(t.Line, "%s: tls: a certificate needs tls.listen (the HTTPS listener)", name)
		}
	}
	tt := t.TLS
	if tt.ClientCAFile != "" || tt.RequireClientCertificate || len(tt.ClientIdentities) > 0 {
		switch {
		case !tt.Enabled():
			at(t.Line, "%s: tls.client_ca_file: client certificates need the tenant's own certificate (tls.cert_file, tls.key_file)", name)
		case tt.ClientCAFile == "":
			at(t.Line, "%s: tls.client_ca_file: required with require_client_certificate or client_identities", name)
		default:
			if _, err := LoadCertPool(c.Path(tt.ClientCAFile)); err != nil {
				at(t.Line, "%s: tls.client_ca_file: %v", name, err)
			}
		}
		for i, ci := range tt.ClientIdentities {
			where := fmt.Sprintf("%s: tls.client_identities[%d]", name, i)
			switch {
			case ci.Name == "":
				at(t.Line, "%s.name: required (the service account)", where)
			case (ci.SPIFFEID == "") == (ci.Subject == ""):
				at(t.Line, "%s: give spiffe_id or subject, exactly one", where)
			case ci.SPIFFEID != "" && !strings.HasPrefix(ci.SPIFFEID, "spiffe://"):
				at(t.Line, "%s.spiffe_id: %q: want spiffe://trust-domain/path", where, ci.SPIFFEID)
			}
		}
	}
	cors := t.CORS
	for _, o := range cors.AllowOrigins {
		if o != "*" && !validOrigin(o) {
			at(t.Line, "%s: cors.allow_origins: %q is not an origin (scheme://host[:port])", name, o)
		}
		if o == "*" && cors.AllowCredentials {
			at(t.Line, "%s: cors.allow_credentials: not allowed with origin \"*\"", name)
		}
	}
	if !cors.Enabled() && (len(cors.AllowMethods) > 0 || len(cors.AllowHeaders) > 0 || len(cors.ExposeHeaders) > 0) {
		at(t.Line, "%s: cors.allow_origins: required when other cors fields are set", name)
	}
	for _, m := range cors.AllowMethods {
		if !methodRe.MatchString(m) {
			at(t.Line, "%s: cors.allow_methods: %q is not an HTTP method (upper case)", name, m)
		}
	}
	for _, list := range []struct {
		field string
		v     []string
	}{{"cors.allow_headers", cors.AllowHeaders}, {"cors.expose_headers", cors.ExposeHeaders}} {
		for _, h := range list.v {
			if !headerRe.MatchString(h) {
				at(t.Line, "%s: %s: %q is not a header name", name, list.field, h)
			}
		}
	}
	if cors.MaxAge < 0 {
		at(t.Line, "%s: cors.max_age: must not be negative", name)
	}
	for _, cidr := range t.IPAllowlist {
		if err := cidr.Err(); err != nil {
			at(lineOr(cidr.Line(), t.Line), "%s: ip_allowlist: %v", name, err)
		} else if !cidr.Prefix().IsValid() {
			at(t.Line, "%s: ip_allowlist: empty entry (want a CIDR or an IP address)", name)
		}
	}
	if t.RequestTimeout < 0 {
		at(t.Line, "%s: request_timeout: must not be negative", name)
	}
	if t.StreamIdleTimeout < 0 {
		at(t.Line, "%s: stream_idle_timeout: must not be negative", name)
	}
	l := t.Limits
	if l.Burst > 0 && l.RequestsPerSecond == 0 {
		at(t.Line, "%s: limits.burst: needs limits.requests_per_second", name)
	}
	if l.Burst > 0 && l.Burst < l.RequestsPerSecond {
		at(t.Line, "%s: limits.burst: %d is less than requests_per_second %d", name, l.Burst, l.RequestsPerSecond)
	}
	for r := range l.PerRolePerHour {
		if !ValidRole(r) {
			at(t.Line, "%s: limits.per_role_per_hour: %q is not a role name", name, r)
		}
	}
	if (l.MaxConnections > 0 || l.MaxRequests > 0) && len(t.Upstreams) == 0 {
		at(t.Line, "%s: limits.max_connections/max_requests: need upstreams of the tenant's own", name)
	}
}

func validateListener(at func(line int, format string, args ...any), field string, l Listener) {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"idle_timeout", l.IdleTimeout}, {"stream_idle_timeout", l.StreamIdleTimeout},
		{"request_headers_timeout", l.RequestHeadersTimeout}, {"request_timeout", l.RequestTimeout},
	} {
		if d.v < 0 {
			at(0, "%s.%s: must not be negative", field, d.name)
		}
	}
	if l.MaxConcurrentStreams > 2147483647 {
		at(0, "%s.max_concurrent_streams: at most 2147483647", field)
	}
	if l.XFFNumTrustedHops > 0 && len(l.TrustedProxies) > 0 {
		at(0, "%s: give xff_num_trusted_hops or trusted_proxies, not both", field)
	}
	if l.XFFNumTrustedHops > 16 {
		at(0, "%s.xff_num_trusted_hops: %d: at most 16", field, l.XFFNumTrustedHops)
	}
	for _, c := range l.TrustedProxies {
		if _, err := netip.ParsePrefix(c); err != nil {
			at(0, "%s.trusted_proxies: %q is not a CIDR such as 10.0.0.0/8", field, c)
		}
	}
}

// GeoHeader is a request header a trusted proxy in front of Envoy sets
// (a CDN's country header such as CF-IPCountry, a load balancer's
// X-Client-Geo): authz removes it — from the policy input and from the
// request the upstream gets — unless the connection comes from one of
// TrustedSources, so a client cannot choose its own country.
type GeoHeader struct {
	// Name is the header (any case).
	Name string `yaml:"name"`
	// TrustedSources are the networks (CIDRs) of the proxies that set it
	// (default: envoy.listener's and tls.listener's trusted_proxies).
	TrustedSources []string `yaml:"trusted_sources"`
}

// GeoTrustedSources is envoy.geo_header.trusted_sources in force.
func (c *Config) GeoTrustedSources() []string {
	if len(c.Envoy.GeoHeader.TrustedSources) > 0 {
		return c.Envoy.GeoHeader.TrustedSources
	}
	return append(slices.Clone(c.Envoy.Listener.TrustedProxies), c.TLS.Listener.TrustedProxies...)
}

func (c *Config) validateGeoHeader(at func(line int, format string, args ...any)) {
	g := c.Envoy.GeoHeader
	if g.Name == "" {
		if len(g.TrustedSources) > 0 {
			at(0, "envoy.geo_header.trusted_sources: set without envoy.geo_header.name")
		}
		return
	}
	if !validHeaderName(g.Name) || strings.HasPrefix(strings.ToLower(g.Name), wire.HeaderPrefix) {
		at(0, "envoy.geo_header.name: %q is not a header name of ours to strip (letters, digits, '-'; not x-kailash-*)", g.Name)
	}
	for _, s := range g.TrustedSources {
		if _, err := netip.ParsePrefix(s); err != nil {
			at(0, "envoy.geo_header.trusted_sources: %q is not a CIDR such as 10.0.0.0/8", s)
		}
	}
	if len(c.GeoTrustedSources()) == 0 {
		at(0, "envoy.geo_header: no trusted source: set envoy.geo_header.trusted_sources or envoy.listener.trusted_proxies (with none, every request's %s would be removed)", g.Name)
	}
}

func validHeaderName(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// LoadCertPool reads a PEM file of CA certificates.
func LoadCertPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}
