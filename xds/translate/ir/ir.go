// Package ir is the first half of the translator: a config.Config, its
// values already typed (addresses, networks), checked and resolved into the
// IR, the data plane as the control plane means it. Package translate turns
// an IR into Envoy resources. It is pure: no I/O, no Envoy types.
package ir

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
)

// IR is the data plane as the control plane means it, with every name and
// address already resolved and checked. It is built from a config.Config by
// BuildIR and turned into Envoy protos by translate.FromIR; nothing in it refers to
// Envoy types, so later features (rate limits, CORS, ...) add fields here
// first and filters read them.
//
// All slices are sorted, so the same config always yields the same IR.
type IR struct {
	// Listener is where Envoy accepts client traffic (an IP literal).
	Listener Address
	// Authz is the ext_authz gRPC service.
	Authz Authz
	// AuthHTTP is the authz server's HTTP address, which serves the login
	// endpoints (/auth/...) of every tenant; nil when authz.http is not set.
	AuthHTTP *Address
	// Runner is the workflow runner every tenant's traffic is routed to.
	Runner Address
	// VirtualHosts has one entry per tenant, sorted by tenant ID.
	VirtualHosts []VirtualHost
	// RateLimit is the global rate-limit service; nil when not configured.
	RateLimit *RateLimit
	// Upstreams are the tenants' own upstream clusters, sorted by name.
	Upstreams []Upstream
	// HTTPS is the TLS listener; nil when not configured.
	HTTPS *HTTPS
	// PerTenant selects scoped routes: one route configuration per tenant,
	// chosen by the request's exact host (config envoy.routes).
	PerTenant bool
	// AuthzTLS and RateLimitTLS are Envoy's mutual TLS to the authz and
	// rate-limit services (envoy.authz_tls, envoy.ratelimit_tls); nil is
	// plaintext (cluster_tls.go).
	AuthzTLS, RateLimitTLS *UpstreamTLS
	// HTTPListener is the plain listener's connection settings
	// (envoy.listener, defaults applied).
	HTTPListener ListenerSettings
	// Tracing is Envoy's OpenTelemetry tracer; nil when telemetry is off.
	Tracing *Tracing
	// AccessLogPath is the file Envoy writes its JSON access log to; ""
	// is off (envoy.access_log).
	AccessLogPath string
	// Explain sends Envoy's answers of 400 and above to authz (gRPC access
	// log) and the decision id to the rate-limit service, for kailash
	// explain (authz.explain.records > 0).
	Explain bool
	// HealthCheckPath is the path the listeners answer themselves (Envoy's
	// health check filter); "" is off (envoy.health_check_path).
	HealthCheckPath string
}

// Address is a resolved host:port.
type Address struct {
	Host string
	Port uint32
}

// addressOf is a config address in the IR.
func addressOf(v config.HostPort) Address { return Address{Host: v.Host(), Port: v.Port()} }

// checkAddr refuses an address that is not set or did not parse (a config
// decoded without Validate).
func checkAddr(v config.HostPort) error {
	if err := v.Err(); err != nil {
		return err
	}
	if v.IsZero() {
		return errors.New("required (host:port)")
	}
	if v.Port() == 0 {
		return fmt.Errorf("%q: port must be 1..65535", v)
	}
	return nil
}

// IsIP reports whether Host is an IP literal (a STATIC cluster) rather than a
// name Envoy must resolve (STRICT_DNS).
func (a Address) IsIP() bool { return net.ParseIP(a.Host) != nil }

func (a Address) String() string { return net.JoinHostPort(a.Host, fmt.Sprint(a.Port)) }

// Authz is the ext_authz filter's settings.
type Authz struct {
	Address Address
	// Timeout of each Check call; Envoy answers 503 when it expires.
	Timeout time.Duration
	// MaxRequestBytes of the body sent with each Check (0: no body).
	MaxRequestBytes uint32
}

// VirtualHost is one tenant's slice of the route table.
type VirtualHost struct {
	// TenantID is set as the ext_authz context extension "tenant".
	TenantID string
	// Domains are lower-cased, unique across all virtual hosts, and sorted.
	Domains []string
	Edge
}

// Name is the Envoy virtual host name.
func (v VirtualHost) Name() string { return "tenant_" + v.TenantID }

// BuildIR checks cfg and resolves it into an IR. It does not trust that cfg
// went through config.Validate: configs built in code are checked as well.
// Every problem is reported, joined, each naming the field or the tenant.
func BuildIR(cfg *config.Config) (*IR, error) { return BuildIRWith(cfg, Inputs{}) }

// BuildIRWith is BuildIR with the file contents the config refers to (the
// tenants' certificates), read by the caller: translation does no I/O.
func BuildIRWith(cfg *config.Config, in Inputs) (*IR, error) {
	if cfg == nil {
		return nil, errors.New("translate: nil config")
	}
	var errs []error
	addr := func(field string, v config.HostPort) Address {
		if err := checkAddr(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
		}
		return addressOf(v)
	}
	ir := &IR{
		Listener: addr("envoy.listen", cfg.Envoy.Listen),
		Authz: Authz{
			Address:         addr("authz.grpc", cfg.Authz.GRPC),
			Timeout:         cfg.Authz.Timeout,
			MaxRequestBytes: cfg.Authz.MaxRequestBytes,
		},
		Runner:       addr("runner.http", cfg.Runner.HTTP),
		PerTenant:    cfg.PerTenantRoutes(),
		HTTPListener: buildListenerSettings(cfg.Envoy.Listener, config.Listener{}),
	}
	if !cfg.Authz.HTTP.IsZero() {
		a := addr("authz.http", cfg.Authz.HTTP)
		ir.AuthHTTP = &a
	}
	if ir.Listener.Host != "" && !cfg.Envoy.Listen.IsIP() {
		errs = append(errs, fmt.Errorf("envoy.listen: %q: host must be an IP address (Envoy listeners do not resolve names)", cfg.Envoy.Listen))
	}
	if ir.Authz.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("authz.timeout: %s: must be positive", ir.Authz.Timeout))
	}
	if len(cfg.Tenants) == 0 {
		errs = append(errs, errors.New("tenants: at least one tenant is required"))
	}

	ids := map[string]bool{}
	owner := map[string]string{} // lower-cased domain → tenant id
	for i, t := range cfg.Tenants {
		name := fmt.Sprintf("tenant %q", t.ID)
		if t.ID == "" {
			name = fmt.Sprintf("tenants[%d]", i)
		}
		tenantErr := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
		}
		switch {
		case t.ID == "":
			tenantErr("id: required")
		case !config.ValidTenantID(t.ID):
			tenantErr("id: must be lowercase letters, digits and '-' (at most 63)")
		case ids[t.ID]:
			tenantErr("id: duplicate")
		}
		ids[t.ID] = true
		if len(t.Domains) == 0 {
			tenantErr("domains: at least one domain is required")
		}
		vh := VirtualHost{TenantID: t.ID}
		for _, d := range t.Domains {
			key := strings.ToLower(strings.TrimSpace(d))
			if !config.ValidDomain(key) {
				tenantErr("domains: %q is not a host name", d)
				continue
			}
			if other, dup := owner[key]; dup {
				if other == t.ID {
					tenantErr("domains: %q is listed twice", d)
				} else {
					tenantErr("domains: %q is already served by tenant %q", d, other)
				}
				continue
			}
			owner[key] = t.ID
			vh.Domains = append(vh.Domains, key)
		}
		slices.Sort(vh.Domains)
		vh.Edge = buildEdge(cfg, &t, ir, tenantErr)
		vh.TLS = buildCertificate(cfg, &t, in, tenantErr)
		ir.VirtualHosts = append(ir.VirtualHosts, vh)
	}
	errs = append(errs, buildGlobalEdge(cfg, ir)...)
	errs = append(errs, buildUpstreamTLS(cfg, ir)...)
	errs = append(errs, buildHTTPS(cfg, ir)...)
	errs = append(errs, buildTelemetry(cfg, ir)...)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.SortFunc(ir.Upstreams, func(a, b Upstream) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(ir.VirtualHosts, func(a, b VirtualHost) int { return strings.Compare(a.TenantID, b.TenantID) })
	return ir, nil
}
