package config

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// Sessions configures the sessions ext_authz issues after an LDAP or SAML
// login, and the identity token (x-kailash-identity) it attaches for the
// runner. Both are signed by one rotating key ring whose public keys are
// served at /auth/.well-known/jwks.json.
type Sessions struct {
	// Issuer and Audience of our access tokens (defaults "kailash" and "kailash").
	Issuer   string `yaml:"issuer"`
	Audience string `yaml:"audience"`
	// Algorithm: ES256 (default) or RS256.
	Algorithm string `yaml:"algorithm"`
	// AccessTTL (default 8h), RefreshTTL (default 720h = 30 days),
	// IdleTimeout (default 1h).
	AccessTTL   time.Duration `yaml:"access_ttl"`
	RefreshTTL  time.Duration `yaml:"refresh_ttl"`
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxSessions per user (0: unlimited); OnLimit: refuse (default) or evict_oldest.
	MaxSessions int    `yaml:"max_sessions"`
	OnLimit     string `yaml:"on_limit"`
	// RotateEvery is how often the signing key is replaced (default 24h).
	RotateEvery time.Duration `yaml:"rotate_every"`
	// InsecureCookies drops the Secure flag from cookies (plain-HTTP development only).
	InsecureCookies bool `yaml:"insecure_cookies"`
	// IdentityAudience and IdentityTTL of x-kailash-identity
	// (defaults "kailash-runner" and 5m).
	IdentityAudience string        `yaml:"identity_audience"`
	IdentityTTL      time.Duration `yaml:"identity_ttl"`
	// Redis, when set, holds what authz replicas must share: sessions and
	// refresh tokens, the signing keys, brute-force counters, TOTP secrets
	// (sealed, see TOTPKeyEnv) and used steps, pending SAML requests and
	// used SAML assertion IDs (all keys start with "kailash:").
	// Unset, all of it is in memory: run one authz replica only.
	Redis *Redis `yaml:"redis"`
	// RecheckEvery bounds how long a session revoked on one replica stays
	// usable on another (default 1s; only with redis).
	RecheckEvery time.Duration `yaml:"recheck_every"`
	// TOTPKeyEnv names the environment variable holding the key (32 bytes,
	// base64 or hex) that seals the TOTP secrets kept in Redis
	// (AES-256-GCM). Only with redis; required there when a tenant
	// requires MFA.
	TOTPKeyEnv string `yaml:"totp_key_env"`
}

// TOTPKey reads the TOTP sealing key from the environment variable the
// config names ("" when it names none).
func (s *Sessions) TOTPKey() (string, error) {
	if s.TOTPKeyEnv == "" {
		return "", nil
	}
	v, ok := os.LookupEnv(s.TOTPKeyEnv)
	if !ok || v == "" {
		return "", fmt.Errorf("sessions.totp_key_env: environment variable %s is not set", s.TOTPKeyEnv)
	}
	return v, nil
}

// Password reads the Redis password from the environment variable the
// config names ("" when it names none).
func (r *Redis) Password() (string, error) {
	if r.PasswordEnv == "" {
		return "", nil
	}
	v, ok := os.LookupEnv(r.PasswordEnv)
	if !ok {
		return "", fmt.Errorf("redis.password_env: environment variable %s is not set", r.PasswordEnv)
	}
	return v, nil
}

// KeyRefresh tunes how a tenant's jwt.jwks_url is kept fresh; the fields
// and defaults are those of issuers[] (extauthz/oidc.Config): the keys are
// refetched after the JWKS response's Cache-Control max-age, kept within
// MinRefreshInterval (1m) .. RefreshInterval (15m); an unknown kid refetches
// at most once per MinRefetch (10s); failed fetches are retried from
// InitialBackoff (1s) doubling to MaxBackoff (30s); Timeout (5s) bounds one
// fetch.
type KeyRefresh struct {
	RefreshInterval    time.Duration `yaml:"refresh_interval"`
	MinRefreshInterval time.Duration `yaml:"min_refresh_interval"`
	MinRefetch         time.Duration `yaml:"min_refetch"`
	InitialBackoff     time.Duration `yaml:"initial_backoff"`
	MaxBackoff         time.Duration `yaml:"max_backoff"`
	Timeout            time.Duration `yaml:"timeout"`
}

func (k KeyRefresh) fields() map[string]time.Duration {
	return map[string]time.Duration{"refresh_interval": k.RefreshInterval, "min_refresh_interval": k.MinRefreshInterval,
		"min_refetch": k.MinRefetch, "initial_backoff": k.InitialBackoff, "max_backoff": k.MaxBackoff, "timeout": k.Timeout}
}

// validateKeyRefresh checks one key source's refresh settings; f names it.
// Only min_refresh_interval is checked for sign when onlyNew (issuers[]
// checks the others itself).
func validateKeyRefresh(at func(line int, format string, args ...any), line int, f string, k KeyRefresh, onlyNew bool) {
	for field, d := range k.fields() {
		if d < 0 && (!onlyNew || field == "min_refresh_interval") {
			at(line, "%s.%s: must not be negative", f, field)
		}
	}
	if k.MinRefreshInterval > 0 && k.RefreshInterval > 0 && k.MinRefreshInterval > k.RefreshInterval {
		at(line, "%s.min_refresh_interval: %s is above refresh_interval %s", f, k.MinRefreshInterval, k.RefreshInterval)
	}
	if k.InitialBackoff > 0 && k.MaxBackoff > 0 && k.InitialBackoff > k.MaxBackoff {
		at(line, "%s.initial_backoff: %s is above max_backoff %s", f, k.InitialBackoff, k.MaxBackoff)
	}
}

// setTenantClaimDefaults decides require_tenant_claim where the config
// leaves it out: a token without the tenant claim would be accepted by every
// tenant trusting its issuer (and audience), so it is required when several
// tenants trust the same issuer (through jwt or issuers[]), else not.
// A composition (WithTenants) clears the defaults first: a tenant reused
// from an earlier one (the file's, the tenant store's decoded tenants) may
// have gained or lost a co-trusting tenant since.
func (c *Config) setTenantClaimDefaults() {
	trusting := map[string]map[string]bool{} // issuer -> tenant ids
	add := func(iss, tenant string) {
		if trusting[iss] == nil {
			trusting[iss] = map[string]bool{}
		}
		trusting[iss][tenant] = true
	}
	for _, t := range c.Tenants {
		if t.JWT.Configured() && t.JWT.Issuer != "" {
			add(t.JWT.Issuer, t.ID)
		}
		for _, o := range t.Issuers {
			add(o.Issuer, t.ID)
		}
	}
	shared := func(iss string) *bool {
		b := len(trusting[iss]) > 1
		return &b
	}
	for i := range c.Tenants {
		c.Tenants[i].setTenantClaimDefaults(func(iss string) bool { return *shared(iss) })
	}
}

// clearTenantClaimDefaults undoes what setTenantClaimDefaults decided.
func (t *Tenant) clearTenantClaimDefaults() {
	if t.JWT.claimDefaulted {
		t.JWT.RequireTenantClaim, t.JWT.claimDefaulted = nil, false
	}
	for k := range t.Issuers {
		if o := &t.Issuers[k]; o.claimDefaulted {
			o.RequireTenantClaim, o.claimDefaulted = nil, false
		}
	}
}

// setTenantClaimDefaults sets require_tenant_claim where the config leaves
// it out: shared(issuer) says whether several tenants trust the issuer.
func (t *Tenant) setTenantClaimDefaults(shared func(string) bool) {
	if t.JWT.RequireTenantClaim == nil && t.JWT.Configured() {
		b := shared(t.JWT.Issuer)
		t.JWT.RequireTenantClaim, t.JWT.claimDefaulted = &b, true
	}
	for k := range t.Issuers {
		if o := &t.Issuers[k]; o.RequireTenantClaim == nil {
			b := shared(o.Issuer)
			o.RequireTenantClaim, o.claimDefaulted = &b, true
		}
	}
}

// DefaultSessionsRedisTimeout bounds each sessions Redis operation.
const DefaultSessionsRedisTimeout = 100 * time.Millisecond

// Lockout is brute-force protection for logins.
type Lockout struct {
	// MaxFailures per user and per client address (default 5) before the
	// key is locked for LockFor (default 15m).
	MaxFailures        int           `yaml:"max_failures"`
	MaxAddressFailures int           `yaml:"max_address_failures"`
	LockFor            time.Duration `yaml:"lock_for"`
}

// LDAP is a tenant's directory, used by POST /auth/login.
type LDAP struct {
	URL        URL    `yaml:"url"`
	StartTLS   bool   `yaml:"start_tls"`
	CAFile     string `yaml:"ca_file"`
	ServerName string `yaml:"server_name"`
	BindDN     string `yaml:"bind_dn"`
	// BindPasswordEnv names the environment variable that holds the service
	// account's password (preferred), or BindPasswordFile a file with it.
	BindPasswordEnv  string `yaml:"bind_password_env"`
	BindPasswordFile string `yaml:"bind_password_file"`
	UserBaseDN       string `yaml:"user_base_dn"`
	UserFilter       string `yaml:"user_filter"`
	// Attributes maps identity fields (email, given_name, family_name,
	// department, title, clearance, location, groups) to directory attributes.
	Attributes map[string]string `yaml:"attributes"`
	// GroupRoles maps a group DN to a role.
	GroupRoles     map[string]string `yaml:"group_roles"`
	DialTimeout    time.Duration     `yaml:"dial_timeout"`
	RequestTimeout time.Duration     `yaml:"request_timeout"`
	PoolSize       int               `yaml:"pool_size"`
}

// BindPassword reads the service account's password from the environment
// variable or file the config names.
func (l *LDAP) BindPassword(c *Config) (string, error) {
	switch {
	case l.BindPasswordEnv != "":
		v, ok := os.LookupEnv(l.BindPasswordEnv)
		if !ok {
			return "", fmt.Errorf("ldap.bind_password_env: environment variable %s is not set", l.BindPasswordEnv)
		}
		return v, nil
	case l.BindPasswordFile != "":
		b, err := os.ReadFile(c.Path(l.BindPasswordFile))
		if err != nil {
			return "", fmt.Errorf("ldap.bind_password_file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return "", nil
}

// MFA says who of a tenant must present a TOTP code at login.
type MFA struct {
	// Required for every user of the tenant, or for users holding one of Roles.
	Required bool     `yaml:"required"`
	Roles    []string `yaml:"roles"`
	// Issuer shown in authenticator apps (default: the tenant id).
	Issuer string `yaml:"issuer"`
	// Enrolment is who starts a TOTP enrolment: self (default; the user
	// with the password) or admin (the user with a one-time code an admin
	// issued; self-enrolment is refused). See login.go.
	Enrolment string `yaml:"enrolment"`
	// AdminRoles may issue enrolment codes for the tenant's users
	// (default [admin]).
	AdminRoles []string `yaml:"admin_roles"`
	// NotifyURL, when set, receives a JSON POST for every enrolment event
	// (code issued, enrolment started, completed).
	NotifyURL URL `yaml:"notify_url"`
}

var ldapAttrFields = map[string]bool{"email": true, "given_name": true, "family_name": true, "department": true,
	"title": true, "clearance": true, "location": true, "groups": true}

func (c *Config) setIdentityDefaults() {
	c.setTenantClaimDefaults()
	c.setLoginDefaults()
	s := &c.Sessions
	if s.Issuer == "" {
		s.Issuer = "kailash"
	}
	if s.Audience == "" {
		s.Audience = "kailash"
	}
	if s.Algorithm == "" {
		s.Algorithm = "ES256"
	}
	if s.OnLimit == "" {
		s.OnLimit = "refuse"
	}
	if s.IdentityAudience == "" {
		s.IdentityAudience = "kailash-runner"
	}
	if s.IdentityTTL == 0 {
		s.IdentityTTL = 5 * time.Minute
	}
	if s.Redis != nil {
		if s.Redis.Timeout == 0 {
			s.Redis.Timeout = DefaultSessionsRedisTimeout
		}
		if s.RecheckEvery == 0 {
			s.RecheckEvery = time.Second
		}
	}
}

func (c *Config) validateIdentity(at func(line int, format string, args ...any)) {
	c.validateLogin(at)
	s := c.Sessions
	if s.Algorithm != "ES256" && s.Algorithm != "RS256" {
		at(0, "sessions.algorithm: %q: want ES256 or RS256", s.Algorithm)
	}
	if s.OnLimit != "refuse" && s.OnLimit != "evict_oldest" {
		at(0, "sessions.on_limit: %q: want refuse or evict_oldest", s.OnLimit)
	}
	for name, d := range map[string]time.Duration{"access_ttl": s.AccessTTL, "refresh_ttl": s.RefreshTTL, "rotate_every": s.RotateEvery, "identity_ttl": s.IdentityTTL} {
		if d < 0 {
			at(0, "sessions.%s: must not be negative", name)
		}
	}
	if s.MaxSessions < 0 {
		at(0, "sessions.max_sessions: must not be negative")
	}
	if s.RecheckEvery < 0 {
		at(0, "sessions.recheck_every: must not be negative")
	}
	if r := s.Redis; r != nil {
		if r.Addr.IsZero() {
			at(0, "sessions.redis.addr: required")
		} else if err := r.Addr.Err(); err != nil {
			at(r.Addr.Line(), "sessions.redis.addr: %v", err)
		}
		if r.DB < 0 {
			at(0, "sessions.redis.db: must not be negative")
		}
		if r.Timeout < 0 {
			at(0, "sessions.redis.timeout: must not be negative")
		}
	} else if s.RecheckEvery > 0 {
		at(0, "sessions.recheck_every: only with sessions.redis")
	}
	if s.Redis == nil && s.TOTPKeyEnv != "" {
		at(0, "sessions.totp_key_env: only with sessions.redis")
	}
	if s.Redis != nil && s.TOTPKeyEnv == "" {
		for _, t := range c.Tenants {
			if t.LDAP != nil && (t.MFA.Required || len(t.MFA.Roles) > 0) {
				at(0, "sessions.totp_key_env: required with sessions.redis when a tenant requires MFA (tenant %q): TOTP secrets are sealed in Redis", t.ID)
				break
			}
		}
	}
	for _, t := range c.Tenants {
		name := tenantName(t.ID)
		validateKeyRefresh(at, t.Line, name+": jwt", t.JWT.KeyRefresh, false)
		if t.JWT.KeyRefresh != (KeyRefresh{}) && t.JWT.JWKSURL.IsZero() {
			at(t.Line, "%s: jwt: refresh_interval, min_refresh_interval, min_refetch, initial_backoff, max_backoff and timeout apply only to jwt.jwks_url", name)
		}
		for i, o := range t.Issuers {
			validateKeyRefresh(at, t.Line, fmt.Sprintf("%s: issuers[%d]", name, i), KeyRefresh{RefreshInterval: o.RefreshInterval,
				MinRefreshInterval: o.MinRefreshInterval, MinRefetch: o.MinRefetch, InitialBackoff: o.InitialBackoff, MaxBackoff: o.MaxBackoff, Timeout: o.Timeout}, true)
		}
		if t.JWT.Issuer != "" && t.JWT.Issuer == s.Issuer {
			at(t.Line, "%s: jwt.issuer: %q is the issuer of our own session tokens (sessions.issuer)", name, t.JWT.Issuer)
		}
		l := t.LDAP
		if l == nil {
			if t.MFA.Required || len(t.MFA.Roles) > 0 {
				at(t.Line, "%s: mfa: needs a login method (ldap)", name)
			}
			continue
		}
		switch sch := l.URL.Scheme(); {
		case l.URL.IsZero():
			at(t.Line, "%s: ldap.url: required", name)
		case l.URL.Err() != nil || (sch != "ldap" && sch != "ldaps"):
			at(t.Line, "%s: ldap.url: %q must be ldap://host[:port] or ldaps://host[:port]", name, l.URL.String())
		case l.StartTLS && sch == "ldaps":
			at(t.Line, "%s: ldap.start_tls: not with ldaps://", name)
		}
		if l.UserBaseDN == "" {
			at(t.Line, "%s: ldap.user_base_dn: required", name)
		}
		if l.UserFilter != "" && strings.Count(l.UserFilter, "%s") != 1 {
			at(t.Line, "%s: ldap.user_filter: %q must contain %%s exactly once", name, l.UserFilter)
		}
		if l.BindPasswordEnv != "" && l.BindPasswordFile != "" {
			at(t.Line, "%s: ldap: give bind_password_env or bind_password_file, not both", name)
		}
		if l.CAFile != "" {
			if _, err := os.Stat(c.Path(l.CAFile)); err != nil {
				at(t.Line, "%s: ldap.ca_file: %v", name, err)
			}
		}
		for k := range l.Attributes {
			if !ldapAttrFields[k] {
				at(t.Line, "%s: ldap.attributes: unknown field %q", name, k)
			}
		}
	}
}
