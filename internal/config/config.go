// Package config holds kailash.yaml: the types every part shares, a strict
// loader that names the file and line of every problem, and validation.
//
// It sits at the bottom of the import graph: xds, extauthz and workflow import
// it; it imports only leaves of ours (config/value, fswatch, wire).
package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kailash-gw/kailash/internal/config/yamlcheck"
)

// Config is the whole of kailash.yaml.
type Config struct {
	Envoy   Envoy    `yaml:"envoy"`
	XDS     XDS      `yaml:"xds"`
	Authz   Authz    `yaml:"authz"`
	Runner  Runner   `yaml:"runner"`
	Policy  Policy   `yaml:"policy"`
	Tenants []Tenant `yaml:"tenants"`
	// RateLimit and TLS are the edge's global settings (edge.go).
	RateLimit RateLimit `yaml:"ratelimit"`
	TLS       EdgeTLS   `yaml:"tls"`
	// Sessions and Lockout govern our own logins (LDAP, SAML): see identity.go.
	Sessions Sessions `yaml:"sessions"`
	Lockout  Lockout  `yaml:"lockout"`
	// Shutdown is how the process drains on SIGTERM (shutdown.go).
	Shutdown Shutdown `yaml:"shutdown"`
	// Telemetry is tracing (telemetry.go).
	Telemetry Telemetry `yaml:"telemetry"`
	// Audit is where administrative actions are recorded (audit.go).
	Audit Audit `yaml:"audit"`
	// TenantStore keeps tenants in PostgreSQL besides this file's, managed
	// through the admin API (tenant_store.go).
	TenantStore TenantStore `yaml:"tenant_store"`

	// File is the path the config was loaded from ("" when built in code).
	File string `yaml:"-"`
	// Digest is the SHA-256 (hex) of the file's bytes ("" when built in code).
	Digest string `yaml:"-"`
	// positions are where the file writes each field path, for errors
	// found after decoding (positionOf).
	positions map[string]yamlcheck.Pos
}

// Envoy describes the data plane the control plane configures.
type Envoy struct {
	// Listen is the address of the HTTP listener pushed to Envoy.
	Listen HostPort `yaml:"listen"`
	// Admin is the Envoy admin address, written into the bootstrap.
	Admin HostPort `yaml:"admin"`
	// NodeID and Cluster identify the Envoy node to the control plane.
	NodeID  string `yaml:"node_id"`
	Cluster string `yaml:"cluster"`
	// Routes is how the tenants' routes reach Envoy: RoutesSingle,
	// RoutesPerTenant or RoutesAuto (the default).
	Routes string `yaml:"routes"`
	// XDSProtocol is the ADS flavour written into Envoy's bootstrap:
	// "delta" (the default: incremental, only changed resources are sent)
	// or "sotw" (state of the world). The control plane serves both.
	XDSProtocol string `yaml:"xds_protocol"`
	// XDSAddresses are the control-plane replicas Envoy's bootstrap points
	// at, as one xDS cluster (replicas.go); empty means [xds.grpc].
	XDSAddresses []HostPort `yaml:"xds_addresses"`
	// XDSTLS, AuthzTLS and RateLimitTLS are the client certificates Envoy
	// presents to the control plane, authz and ratelimit when those
	// require mutual TLS (mtls.go).
	XDSTLS       ClientTLS `yaml:"xds_tls"`
	AuthzTLS     ClientTLS `yaml:"authz_tls"`
	RateLimitTLS ClientTLS `yaml:"ratelimit_tls"`
	// Listener is the HTTP listener's connection settings (edge.go).
	Listener Listener `yaml:"listener"`
	// HealthCheckPath is the path Envoy's listeners answer themselves,
	// for load balancers and Kubernetes probes: 200 while Envoy serves,
	// 503 once it drains (health.go). Default /.kailash/healthz; "off"
	// turns it off.
	HealthCheckPath string `yaml:"health_check_path"`
	// AccessLog is where Envoy writes its JSON access log, one line per
	// request: "stdout" (the default), "stderr", a file path (relative to
	// this file) or "off".
	AccessLog string `yaml:"access_log"`
	// GeoHeader is a country (or other geo) header only trusted proxies
	// may set (edge.go).
	GeoHeader GeoHeader `yaml:"geo_header"`
}

// Values of envoy.access_log besides a path.
const (
	AccessLogStdout = "stdout"
	AccessLogStderr = "stderr"
	AccessLogOff    = "off"
)

// AccessLogPath is the file Envoy writes its access log to ("" when off).
func (c *Config) AccessLogPath() string {
	switch c.Envoy.AccessLog {
	case AccessLogOff:
		return ""
	case "", AccessLogStdout:
		return "/dev/stdout"
	case AccessLogStderr:
		return "/dev/stderr"
	}
	return c.Path(c.Envoy.AccessLog)
}

// Values of envoy.routes.
const (
	// RoutesSingle is one route configuration holding every tenant's
	// virtual host. Any domain works (wildcards, ports); a one-tenant edit
	// sends, and Envoy rebuilds, the whole table.
	RoutesSingle = "single"
	// RoutesPerTenant is Envoy's scoped routes: one route configuration per
	// tenant, chosen by the request's exact host. A one-tenant edit sends
	// and rebuilds that tenant only. Domains must be exact host names (no
	// "*", no port): scope keys are exact strings.
	RoutesPerTenant = "per_tenant"
	// RoutesAuto is RoutesPerTenant when every domain is an exact host
	// name, else RoutesSingle.
	RoutesAuto = "auto"
)

// Values of envoy.xds_protocol.
const (
	XDSDelta = "delta"
	XDSSotW  = "sotw"
)

// PerTenantRoutes reports whether the tenants' routes are scoped (one route
// configuration per tenant): envoy.routes per_tenant, or auto with only
// exact domains.
func (c *Config) PerTenantRoutes() bool {
	switch c.Envoy.Routes {
	case RoutesPerTenant:
		return true
	case RoutesSingle:
		return false
	}
	for i := range c.Tenants {
		for _, d := range c.Tenants[i].Domains {
			if !ExactDomain(d) {
				return false
			}
		}
	}
	return true
}

// ExactDomain reports whether d names one host: no wildcard and no port.
func ExactDomain(d string) bool { return !strings.ContainsAny(d, "*:") }

// XDS is the control plane's own addresses.
type XDS struct {
	GRPC HostPort `yaml:"grpc"` // ADS server
	HTTP HostPort `yaml:"http"` // /metrics, /healthz, /readyz
	// TLS, when set, requires mutual TLS on the ADS port (mtls.go).
	TLS ServerTLS `yaml:"tls"`
}

// Authz is the ext_authz server.
type Authz struct {
	GRPC HostPort `yaml:"grpc"` // envoy.service.auth.v3.Authorization (+ gRPC health)
	HTTP HostPort `yaml:"http"` // /metrics, /healthz, /readyz
	// Timeout is how long Envoy waits for a Check before answering 503.
	Timeout time.Duration `yaml:"timeout"`
	// MaxRequestBytes of the body Envoy buffers and sends with each Check
	// (0 sends no body).
	MaxRequestBytes uint32 `yaml:"max_request_bytes"`
	// TLS, when set, requires mutual TLS on the gRPC port (mtls.go).
	TLS ServerTLS `yaml:"tls"`
	// TenantFrom is where a Check's tenant comes from when its route sets
	// no context_extensions tenant: "context_extensions" (default) or
	// "host" (tenant_from.go).
	TenantFrom string `yaml:"tenant_from"`
	// JWKSCache persists the last good keys of each key source (jwks_cache.go).
	JWKSCache JWKSCache `yaml:"jwks_cache"`
	// Explain is what authz keeps for `kailash explain` (explain.go).
	Explain Explain `yaml:"explain"`
	// APIKeysFile holds the tenants' API keys (service accounts), hashed,
	// as `kailash apikey` writes it; followed for changes. Unset: no API
	// keys. Callers present "Authorization: ApiKey kl_..." or X-API-Key.
	APIKeysFile string `yaml:"api_keys_file"`
	// APIKeysInRedis keeps the API keys in sessions.redis instead, read by
	// every authz replica (and written there by `kailash apikey`), with
	// each key's last use by any replica.
	APIKeysInRedis bool `yaml:"api_keys_in_redis"`
}

// APIKeysEnabled reports whether authz verifies API keys (a file or
// Redis); with authz.http, the API keys admin API is served
// (wire.AdminAPIKeysPath).
func (a Authz) APIKeysEnabled() bool { return a.APIKeysFile != "" || a.APIKeysInRedis }

// Runner is the workflow runner.
type Runner struct {
	HTTP HostPort `yaml:"http"`
	// Workflows is a directory of workflow definitions (relative to the config file).
	Workflows string `yaml:"workflows"`
	// DataDir holds one SQLite database per tenant (relative to the config
	// file); empty keeps workflows and executions in memory only.
	DataDir string `yaml:"data_dir"`
	// IdentityJWKS (a file relative to the config file, or an http(s) URL)
	// holds the keys of the identity token ext_authz signs. When set, the
	// runner requires x-kailash-identity and takes tenant, user and roles
	// from its claims; IdentityAudience is then required.
	IdentityJWKS     string `yaml:"identity_jwks"`
	IdentityAudience string `yaml:"identity_audience"`
	// HTTPAllow lists the hosts ("host" or "host:port") the http node may call;
	// empty allows none.
	HTTPAllow []string `yaml:"http_allow"`
	// Limits apply to every tenant; TenantLimits override them per tenant
	// (a zero field inherits).
	Limits       RunnerLimits            `yaml:"limits"`
	TenantLimits map[string]RunnerLimits `yaml:"tenant_limits"`
	// RoleLimits apply to callers holding the role; with several roles, and
	// with the tenant's limits, the stricter value of each field wins (a
	// zero field sets nothing).
	RoleLimits map[string]RunnerLimits `yaml:"role_limits"`
	// PostgresDSN, when set, keeps workflows, executions and audit records
	// in PostgreSQL (one schema per tenant) instead of SQLite files in
	// DataDir. It may hold a password: never log it.
	PostgresDSN string `yaml:"postgres_dsn"`
	// PermissionDecision is the policy decision the permission_check node
	// evaluates (default "kailash/authz/granted": the set of permissions
	// the caller's roles grant).
	PermissionDecision string `yaml:"permission_decision"`
	// Encryption configures field-level encryption at rest (encryption.go).
	Encryption Encryption `yaml:"encryption"`
	// EventDecision is the policy decision that says whether a subscriber
	// may see a workflow's events on the event streams (default
	// "kailash/authz/resource_allowed": the workflow's department and
	// classification labels), a boolean or {"allowed": bool}.
	EventDecision string `yaml:"event_decision"`
	// LeaseTTL is how long a runner's hold on a running execution lasts
	// without renewal (renewed every third of it); a replica takes over
	// executions whose lease ended (docs/deploy.md). Zero: 15s.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// Retention purges old execution records and audit rows on a schedule
	// (retention.go); unset keeps them forever.
	Retention Retention `yaml:"retention"`
}

// RunnerLimits bound what one tenant's workflows may do. Zero means the
// runner's default.
type RunnerLimits struct {
	MaxWorkflows     int           `yaml:"max_workflows"`
	MaxNodes         int           `yaml:"max_nodes"`
	MaxExecutionTime time.Duration `yaml:"max_execution_time"`
	NodeTimeout      time.Duration `yaml:"node_timeout"`
	// MaxConcurrentExecutions bounds the running executions of the tenant
	// (under role_limits: of the role's holders in the tenant); on
	// PostgreSQL counted over every runner replica's live executions.
	MaxConcurrentExecutions int `yaml:"max_concurrent_executions"`
	MaxParallelNodes        int `yaml:"max_parallel_nodes"`
	// AllowedNodeTypes, when not empty, is the only node types allowed.
	AllowedNodeTypes []string `yaml:"allowed_node_types"`
	// CodeMaxSteps and CodeMaxMemory (bytes) bound one run of a code node.
	CodeMaxSteps  uint64 `yaml:"code_max_steps"`
	CodeMaxMemory int64  `yaml:"code_max_memory"`
	// BatchMaxItems bounds the items of one batch node.
	BatchMaxItems int `yaml:"batch_max_items"`
}

// Policy selects the Rego bundle and the decision evaluated for each Check.
type Policy struct {
	// Bundle is a directory of .rego/.json files; empty means the bundle
	// embedded in the binary (package policies).
	Bundle string `yaml:"bundle"`
	// Decision is the path of the rule evaluated, e.g. "kailash/authz/result".
	Decision string `yaml:"decision"`

	// Bundle sources, signing, decision logs, dry-run and shadow (policy.go).
	BundleURL            string        `yaml:"bundle_url"`
	PollInterval         time.Duration `yaml:"poll_interval"`
	PersistDir           string        `yaml:"persist_dir"`
	Signing              PolicySigning `yaml:"signing"`
	DecisionLogs         DecisionLogs  `yaml:"decision_logs"`
	DryRun               bool          `yaml:"dry_run"`
	SkipRequestBodyParse bool          `yaml:"skip_request_body_parse"`
	Shadow               string        `yaml:"shadow"`
	DecisionCache        DecisionCache `yaml:"decision_cache"`
}

// Tenant is one customer: its domains and the identities it trusts.
type Tenant struct {
	ID       string   `yaml:"id"`
	Domains  []string `yaml:"domains"`
	Plan     string   `yaml:"plan"`
	Features []string `yaml:"features"`
	JWT      JWT      `yaml:"jwt"`
	// DryRun overrides policy.dry_run for this tenant: true logs its
	// policy denials (decision log, dry_run) and lets the requests through;
	// false enforces them even when policy.dry_run is on. Unset: policy.dry_run.
	DryRun *bool `yaml:"dry_run"`

	// Edge settings (edge.go). Active defaults to true; Upstreams default
	// to the runner.
	Active         *bool         `yaml:"active"`
	Upstreams      []HostPort    `yaml:"upstreams"`
	TLS            TenantTLS     `yaml:"tls"`
	CORS           CORS          `yaml:"cors"`
	IPAllowlist    []Prefix      `yaml:"ip_allowlist"`
	Limits         TenantLimits  `yaml:"limits"`
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// StreamIdleTimeout (over envoy.listener's) and Compression (default
	// true) of the tenant's routes (edge.go).
	StreamIdleTimeout time.Duration `yaml:"stream_idle_timeout"`
	Compression       *bool         `yaml:"compression"`
	// LDAP login (POST /auth/login) and who must present a TOTP code.
	LDAP *LDAP `yaml:"ldap"`
	MFA  MFA   `yaml:"mfa"`
	// SAML single sign-on (/auth/saml/...) and external OIDC issuers whose
	// tokens the tenant accepts besides (or instead of) jwt (federation.go).
	SAML    *SAML        `yaml:"saml"`
	Issuers []OIDCIssuer `yaml:"issuers"`
	// Login hardens /auth/* and cookie-authenticated requests (login.go).
	Login Login `yaml:"login"`

	// Line is where the tenant starts in the file (for error messages).
	Line int `yaml:"-"`
	// Source is where the tenant comes from: "" for the file, else the
	// tenant store (WithTenants).
	Source string `yaml:"-"`
	// Admin is true for tenant_store.admin_tenant (set by SetDefaults,
	// never read from a file or a document): the policy input's
	// tenant.admin, which lets the shipped bundle give system:configure
	// over other tenants on the admin tenant's domains only.
	Admin bool `yaml:"-"`
}

// UnmarshalYAML records the tenant's line and decodes strictly.
func (t *Tenant) UnmarshalYAML(n *yaml.Node) error {
	type plain Tenant
	var p plain
	if err := decodeStrict(n, &p); err != nil {
		return err
	}
	*t = Tenant(p)
	t.Line = n.Line
	t.setValueLines(n)
	return nil
}

// JWT says which bearer tokens a tenant accepts.
type JWT struct {
	Issuer    string   `yaml:"issuer"`
	Audiences []string `yaml:"audiences"`
	// Exactly one of JWKSFile (relative to the config file) and JWKSURL.
	JWKSFile string `yaml:"jwks_file"`
	JWKSURL  URL    `yaml:"jwks_url"`
	// ClockSkew tolerated on exp/nbf/iat (default 30s, at most 5m).
	ClockSkew time.Duration `yaml:"clock_skew"`
	// RolesClaim names the claim holding the caller's roles (default "roles").
	RolesClaim string `yaml:"roles_claim"`
	// TenantClaim, when the token carries it, must equal the tenant id
	// (default "tenant"); a token minted for another tenant is refused.
	TenantClaim string `yaml:"tenant_claim"`
	// RequireTenantClaim also refuses a token without it (see identity.go
	// for the default).
	RequireTenantClaim *bool `yaml:"require_tenant_claim"`
	// claimDefaulted: RequireTenantClaim was set by setTenantClaimDefaults,
	// not by the config, and is decided again by the next composition.
	claimDefaulted bool
	// KeyRefresh tunes how jwks_url is kept fresh (identity.go).
	KeyRefresh `yaml:",inline"`
}

// Defaults used when a field is left empty.
const (
	DefaultDecision    = "kailash/authz/result"
	DefaultClockSkew   = 30 * time.Second
	MaxClockSkew       = 5 * time.Minute
	DefaultAuthzTimout = 500 * time.Millisecond
	DefaultNodeID      = "kailash-envoy"
	DefaultCluster     = "kailash"
)

// Load reads, strictly decodes, defaults and validates a config file.
// Every error names the file and, where known, the line.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, b)
}

// Parse is Load on bytes already read; name is used in errors and to resolve
// relative paths.
func Parse(name string, b []byte) (*Config, error) {
	// First the document as nodes (aliases not expanded), checked against
	// the types key by key: every problem at its own line and column with
	// its field path, aliases followed to their anchors, an alias bomb
	// refused before anything expands it (yamlcheck). Then one decode of
	// the whole document, so anchors resolve and lines are the file's.
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, fmt.Errorf("%s:%s", name, syntaxRe.ReplaceAllString(err.Error(), "$1: "))
	}
	if errs := yamlcheck.Check(&root, reflect.TypeOf(Config{}), 0); len(errs) > 0 {
		out := make([]error, len(errs))
		for i, e := range errs {
			out[i] = fmt.Errorf("%s:%w", name, e)
		}
		return nil, errors.Join(out...)
	}
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	c.File = name
	c.positions = yamlcheck.Positions(&root, reflect.TypeOf(Config{}))
	sum := sha256.Sum256(b)
	c.Digest = hex.EncodeToString(sum[:])
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// syntaxRe is yaml's "yaml: line N: " prefix of a syntax error.
var syntaxRe = regexp.MustCompile(`^yaml: line (\d+): `)

// decodeStrict decodes a section. Parse has checked every key of the
// document against the types (yamlcheck) before decoding, so this is a
// plain decode of the file's own nodes: lines stay the file's and aliases
// resolve (re-encoding the node, as this once did, lost both).
func decodeStrict(n *yaml.Node, v any) error { return n.Decode(v) }

// SetDefaults fills empty fields with their defaults.
func (c *Config) SetDefaults() {
	if c.Envoy.NodeID == "" {
		c.Envoy.NodeID = DefaultNodeID
	}
	if c.Envoy.Cluster == "" {
		c.Envoy.Cluster = DefaultCluster
	}
	if c.Envoy.Routes == "" {
		c.Envoy.Routes = RoutesAuto
	}
	if c.Envoy.XDSProtocol == "" {
		c.Envoy.XDSProtocol = XDSDelta
	}
	if c.Authz.Timeout == 0 {
		c.Authz.Timeout = DefaultAuthzTimout
	}
	c.setIdentityDefaults()
	c.setFederationDefaults()
	c.setEdgeDefaults()
	c.setShutdownDefaults()
	c.setTelemetryDefaults()
	if c.Policy.Decision == "" {
		c.Policy.Decision = DefaultDecision
	}
	for i := range c.Tenants {
		t := &c.Tenants[i]
		t.Admin = c.TenantStore.AdminTenant != "" && t.ID == c.TenantStore.AdminTenant && t.Source == ""
		j := &c.Tenants[i].JWT
		if j.ClockSkew == 0 {
			j.ClockSkew = DefaultClockSkew
		}
		if j.RolesClaim == "" {
			j.RolesClaim = "roles"
		}
		if j.TenantClaim == "" {
			j.TenantClaim = "tenant"
		}
	}
}

// Path resolves p relative to the config file's directory.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) || c.File == "" {
		return p
	}
	return filepath.Join(filepath.Dir(c.File), p)
}

// Tenant returns the tenant with this id.
func (c *Config) Tenant(id string) (*Tenant, bool) {
	for i := range c.Tenants {
		if c.Tenants[i].ID == id {
			return &c.Tenants[i], true
		}
	}
	return nil, false
}

// Validate checks the whole config and reports every problem at once, each
// naming the file, the line where known, and the field.
func (c *Config) Validate() error {
	var errs []error
	at := func(line int, format string, args ...any) {
		loc := c.File
		if loc == "" {
			loc = "config"
		}
		msg := fmt.Sprintf(format, args...)
		if line > 0 {
			loc = fmt.Sprintf("%s:%d", loc, line)
		} else if p, ok := c.positionOf(msg); ok {
			loc = fmt.Sprintf("%s:%d:%d", loc, p.Line, p.Column)
		}
		errs = append(errs, fmt.Errorf("%s: %s", loc, msg))
	}
	addr := func(field string, v HostPort, required bool) {
		if v.IsZero() && required {
			at(0, "%s: required (host:port)", field)
		}
		if err := v.Err(); err != nil {
			at(v.Line(), "%s: %v", field, err)
		}
	}
	addr("envoy.listen", c.Envoy.Listen, true)
	addr("envoy.admin", c.Envoy.Admin, false)
	switch c.Envoy.Routes {
	case "", RoutesAuto, RoutesSingle, RoutesPerTenant:
	default:
		at(0, "envoy.routes: %q: want %s, %s or %s", c.Envoy.Routes, RoutesAuto, RoutesSingle, RoutesPerTenant)
	}
	switch c.Envoy.XDSProtocol {
	case "", XDSDelta, XDSSotW:
	default:
		at(0, "envoy.xds_protocol: %q: want %s or %s", c.Envoy.XDSProtocol, XDSDelta, XDSSotW)
	}
	addr("xds.grpc", c.XDS.GRPC, true)
	addr("xds.http", c.XDS.HTTP, false)
	addr("authz.grpc", c.Authz.GRPC, true)
	addr("authz.http", c.Authz.HTTP, false)
	addr("runner.http", c.Runner.HTTP, true)
	c.validateRunner(at)
	c.validateEdge(at)
	c.validateIdentity(at)
	c.validateFederation(at)
	c.validateMTLS(at)
	c.validateShutdown(at)
	c.validateHealthCheck(at)
	c.validateTelemetry(at)
	c.validateReplicas(at)
	c.validateTenantFrom(at)
	if c.Authz.Timeout < 0 {
		at(0, "authz.timeout: must be positive")
	}
	c.validateExplain(at)
	c.validateAudit(at)
	c.validateTenantStore(at)
	c.validateGeoHeader(at)
	if c.Authz.APIKeysInRedis && (c.Sessions.Redis == nil || c.Authz.APIKeysFile != "") {
		at(0, "authz.api_keys_in_redis: needs sessions.redis, and not authz.api_keys_file as well")
	}
	if n := c.Policy.DecisionCache.Size; n < 0 || n > MaxDecisionCacheSize {
		at(0, "policy.decision_cache.size: %d: must be between 0 (the default, %d) and %d", n, DefaultDecisionCacheSize, MaxDecisionCacheSize)
	}
	if strings.HasPrefix(c.Policy.Decision, "/") || strings.HasPrefix(c.Policy.Decision, "data.") {
		at(0, "policy.decision: %q: give the path without a leading / or data. (e.g. kailash/authz/result)", c.Policy.Decision)
	}
	if len(c.Tenants) == 0 {
		at(0, "tenants: at least one tenant is required")
	}
	ids := make(map[string]int, len(c.Tenants))
	domains := make(map[string]string, 2*len(c.Tenants))
	// stat is os.Stat's error, once per file: tenants by the thousand
	// often share one JWKS file.
	stats := map[string]error{}
	stat := func(p string) error {
		err, ok := stats[p]
		if !ok {
			_, err = os.Stat(p)
			stats[p] = err
		}
		return err
	}
	for i := range c.Tenants {
		t := &c.Tenants[i]
		name := tenantName(t.ID)
		if t.ID == "" {
			name = fmt.Sprintf("tenants[%d]", i)
			at(t.Line, "%s: id: required", name)
		} else if !ValidTenantID(t.ID) {
			at(t.Line, "%s: id: must be lowercase letters, digits and '-' (at most 63)", name)
		}
		if prev, dup := ids[t.ID]; dup && t.ID != "" {
			at(t.Line, "%s: id: duplicate of tenants[%d]", name, prev)
		}
		ids[t.ID] = i
		if len(t.Domains) == 0 {
			at(t.Line, "%s: domains: at least one domain is required", name)
		}
		for _, d := range t.Domains {
			if !ValidDomain(d) {
				at(t.Line, "%s: domains: %q is not a host name", name, d)
				continue
			}
			if c.Envoy.Routes == RoutesPerTenant && !ExactDomain(d) {
				at(t.Line, "%s: domains: %q: envoy.routes per_tenant matches exact host names only (no \"*\", no port); use envoy.routes single or auto", name, d)
			}
			key := strings.ToLower(d)
			if other, dup := domains[key]; dup {
				at(t.Line, "%s: domains: %q is already served by tenant %q", name, d, other)
			}
			domains[key] = t.ID
		}
		j := t.JWT
		if !j.Configured() && len(t.Issuers) > 0 {
			continue // the tenant trusts only its issuers (federation.go)
		}
		if j.Issuer == "" {
			at(t.Line, "%s: jwt.issuer: required", name)
		}
		if len(j.Audiences) == 0 {
			at(t.Line, "%s: jwt.audiences: at least one audience is required", name)
		}
		switch {
		case j.JWKSFile == "" && j.JWKSURL.IsZero():
			at(t.Line, "%s: jwt: one of jwks_file or jwks_url is required", name)
		case j.JWKSFile != "" && !j.JWKSURL.IsZero():
			at(t.Line, "%s: jwt: give jwks_file or jwks_url, not both", name)
		case j.JWKSFile != "":
			if err := stat(c.Path(j.JWKSFile)); err != nil {
				at(t.Line, "%s: jwt.jwks_file: %v", name, err)
			}
		case !httpURLValue(j.JWKSURL):
			at(lineOr(j.JWKSURL.Line(), t.Line), "%s: jwt.jwks_url: %q must be an http(s) URL", name, j.JWKSURL.String())
		}
		if j.ClockSkew < 0 || j.ClockSkew > MaxClockSkew {
			at(t.Line, "%s: jwt.clock_skew: %s is outside 0..%s", name, j.ClockSkew, MaxClockSkew)
		}
	}
	return errors.Join(errs...)
}

// validateRunner checks the runner section; defaults live in package workflow.
func (c *Config) validateRunner(at func(line int, format string, args ...any)) {
	c.validateEncryption(at)
	c.validateLease(at)
	c.validateRetention(at)
	r := c.Runner
	switch {
	case r.IdentityJWKS != "" && r.IdentityAudience == "":
		at(0, "runner.identity_audience: required when runner.identity_jwks is set")
	case r.IdentityJWKS == "" && r.IdentityAudience != "":
		at(0, "runner.identity_jwks: required when runner.identity_audience is set")
	case strings.HasPrefix(r.IdentityJWKS, "https://") || strings.HasPrefix(r.IdentityJWKS, "http://"):
	case r.IdentityJWKS != "":
		if _, err := os.Stat(c.Path(r.IdentityJWKS)); err != nil {
			at(0, "runner.identity_jwks: %v", err)
		}
	}
	for _, h := range r.HTTPAllow {
		if h == "" || strings.ContainsAny(h, "/ ") || strings.Contains(h, "://") {
			at(0, "runner.http_allow: %q must be a host or host:port", h)
		}
	}
	checkLimits := func(field string, l RunnerLimits) {
		for _, f := range []struct {
			name string
			v    int64
		}{
			{"max_workflows", int64(l.MaxWorkflows)}, {"max_nodes", int64(l.MaxNodes)},
			{"max_execution_time", int64(l.MaxExecutionTime)}, {"node_timeout", int64(l.NodeTimeout)},
			{"max_concurrent_executions", int64(l.MaxConcurrentExecutions)},
			{"max_parallel_nodes", int64(l.MaxParallelNodes)}, {"code_max_memory", l.CodeMaxMemory},
			{"batch_max_items", int64(l.BatchMaxItems)},
		} {
			if f.v < 0 {
				at(0, "%s.%s: must not be negative", field, f.name)
			}
		}
	}
	checkLimits("runner.limits", r.Limits)
	for id, l := range r.TenantLimits {
		if _, ok := c.Tenant(id); !ok {
			at(0, "runner.tenant_limits: %q is not a tenant", id)
		}
		checkLimits(fmt.Sprintf("runner.tenant_limits.%s", id), l)
	}
	for role, l := range r.RoleLimits {
		if role == "" {
			at(0, "runner.role_limits: empty role name")
		}
		checkLimits(fmt.Sprintf("runner.role_limits.%s", role), l)
	}
	if r.PostgresDSN != "" && !strings.HasPrefix(r.PostgresDSN, "postgres://") && !strings.HasPrefix(r.PostgresDSN, "postgresql://") && !strings.Contains(r.PostgresDSN, "=") {
		at(0, "runner.postgres_dsn: want a postgres:// URL or a key=value connection string")
	}
}
