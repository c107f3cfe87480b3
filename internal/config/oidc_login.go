package config

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// OIDCCallbackPath is the path of the browser login's redirect URI
// (login.oidc.redirect_url must end in it).
const OIDCCallbackPath = "/auth/oidc/callback"

// OIDCLogin is a tenant's browser login with an OpenID provider: the
// authorization-code flow with PKCE (S256), state and nonce (GET
// /auth/oidc/login, GET /auth/oidc/callback, POST /auth/oidc/logout),
// ending in our session, as after an LDAP or SAML login. The provider is
// found by discovery (Issuer + /.well-known/openid-configuration, or
// DiscoveryURL).
type OIDCLogin struct {
	// Issuer is the provider's exact issuer (the ID token's iss).
	Issuer string `yaml:"issuer"`
	// DiscoveryURL overrides Issuer + "/.well-known/openid-configuration".
	DiscoveryURL URL `yaml:"discovery_url"`
	// ClientID is our client at the provider (the ID token's aud).
	ClientID string `yaml:"client_id"`
	// ClientSecretEnv names the environment variable holding the client
	// secret (preferred), or ClientSecretFile a file with it. Neither: a
	// public client (PKCE alone).
	ClientSecretEnv  string `yaml:"client_secret_env"`
	ClientSecretFile string `yaml:"client_secret_file"`
	// RedirectURL is the absolute URL of GET /auth/oidc/callback as the
	// browser reaches it (registered at the provider as a redirect URI).
	RedirectURL URL `yaml:"redirect_url"`
	// PostLogoutRedirectURL is where the provider sends the browser after
	// RP-initiated logout (registered at the provider; optional).
	PostLogoutRedirectURL URL `yaml:"post_logout_redirect_url"`
	// Scopes requested (default [openid, email, profile]; openid is always
	// requested).
	Scopes []string `yaml:"scopes"`
	// RolesClaim (default "roles") and GroupsClaim (default "groups") name
	// the ID token claims holding the user's roles and groups (a list or a
	// space-separated string).
	RolesClaim  string `yaml:"roles_claim"`
	GroupsClaim string `yaml:"groups_claim"`
	// GroupRoles maps a group, as the provider sends it, to a role.
	GroupRoles map[string]string `yaml:"group_roles"`
	// Attributes maps identity attribute names (email, department,
	// clearance, ...) to ID token claims (string values only).
	Attributes map[string]string `yaml:"attributes"`
	// TenantClaim, when the ID token carries it, must equal the tenant id
	// (default "tenant"), as in jwt.
	TenantClaim string `yaml:"tenant_claim"`
	// ClockSkew on the ID token's exp/nbf/iat (default 30s, at most 5m).
	ClockSkew time.Duration `yaml:"clock_skew"`
	// Timeout bounds one request to the provider (discovery, keys, token
	// endpoint) (default 5s).
	Timeout time.Duration `yaml:"timeout"`
	// MaxPending bounds the tenant's logins started and not yet returned
	// (default DefaultOIDCMaxPending); StartsPerMinute bounds login starts
	// per client address (default DefaultOIDCStartsPerMinute; beyond: 429).
	MaxPending      int `yaml:"max_pending"`
	StartsPerMinute int `yaml:"starts_per_minute"`
}

// sessionClaims are the claims of our session tokens, which identity
// attributes may not be named (extauthz/session's reserved claims).
var sessionClaims = map[string]bool{"iss": true, "sub": true, "aud": true, "exp": true, "nbf": true, "iat": true, "jti": true,
	"sid": true, "tenant": true, "roles": true, "groups": true, "method": true, "amr": true}

// Defaults of login.oidc.
const (
	DefaultOIDCMaxPending      = 10_000
	DefaultOIDCStartsPerMinute = 60
	DefaultOIDCTimeout         = 5 * time.Second
)

// ClientSecret reads the client secret from the environment variable or
// file the config names ("" for a public client).
func (o *OIDCLogin) ClientSecret(c *Config) (string, error) {
	switch {
	case o.ClientSecretEnv != "":
		v, ok := os.LookupEnv(o.ClientSecretEnv)
		if !ok || v == "" {
			return "", fmt.Errorf("login.oidc.client_secret_env: environment variable %s is not set", o.ClientSecretEnv)
		}
		return v, nil
	case o.ClientSecretFile != "":
		b, err := os.ReadFile(c.Path(o.ClientSecretFile))
		if err != nil {
			return "", fmt.Errorf("login.oidc.client_secret_file: %w", err)
		}
		s := strings.TrimRight(string(b), "\r\n")
		if s == "" {
			return "", fmt.Errorf("login.oidc.client_secret_file: %s is empty", c.Path(o.ClientSecretFile))
		}
		return s, nil
	}
	return "", nil
}

func (c *Config) setOIDCLoginDefaults() {
	for i := range c.Tenants {
		o := c.Tenants[i].Login.OIDC
		if o == nil {
			continue
		}
		if len(o.Scopes) == 0 {
			o.Scopes = []string{"openid", "email", "profile"}
		} else if !slices.Contains(o.Scopes, "openid") {
			o.Scopes = append([]string{"openid"}, o.Scopes...)
		}
		def := func(s *string, v string) {
			if *s == "" {
				*s = v
			}
		}
		def(&o.RolesClaim, "roles")
		def(&o.GroupsClaim, "groups")
		def(&o.TenantClaim, "tenant")
		if o.ClockSkew == 0 {
			o.ClockSkew = DefaultClockSkew
		}
		if o.Timeout == 0 {
			o.Timeout = DefaultOIDCTimeout
		}
		if o.MaxPending == 0 {
			o.MaxPending = DefaultOIDCMaxPending
		}
		if o.StartsPerMinute == 0 {
			o.StartsPerMinute = DefaultOIDCStartsPerMinute
		}
	}
}

// validateOIDCLogin checks login.oidc of tenant name (line: the tenant's).
func (c *Config) validateOIDCLogin(at func(line int, format string, args ...any), line int, name string, o *OIDCLogin) {
	f := name + ": login.oidc"
	switch {
	case o.Issuer == "":
		at(line, "%s.issuer: required", f)
	case o.Issuer == c.Sessions.Issuer:
		at(line, "%s.issuer: %q is the issuer of our own session tokens (sessions.issuer)", f, o.Issuer)
	case o.DiscoveryURL.IsZero() && !httpURL(o.Issuer):
		at(line, "%s.issuer: %q: discovery needs an http(s) issuer; or set discovery_url", f, o.Issuer)
	}
	if !o.DiscoveryURL.IsZero() && !httpURLValue(o.DiscoveryURL) {
		at(lineOr(o.DiscoveryURL.Line(), line), "%s.discovery_url: %q must be an http(s) URL", f, o.DiscoveryURL.String())
	}
	if o.ClientID == "" {
		at(line, "%s.client_id: required", f)
	}
	if o.ClientSecretEnv != "" && o.ClientSecretFile != "" {
		at(line, "%s: give client_secret_env or client_secret_file, not both", f)
	}
	if o.ClientSecretFile != "" {
		if _, err := os.Stat(c.Path(o.ClientSecretFile)); err != nil {
			at(line, "%s.client_secret_file: %v", f, err)
		}
	}
	switch {
	case !httpURLValue(o.RedirectURL):
		at(lineOr(o.RedirectURL.Line(), line), "%s.redirect_url: %q must be an absolute http(s) URL (of %s)", f, o.RedirectURL.String(), OIDCCallbackPath)
	case o.RedirectURL.URL().Path != OIDCCallbackPath || o.RedirectURL.URL().RawQuery != "" || o.RedirectURL.URL().Fragment != "":
		at(lineOr(o.RedirectURL.Line(), line), "%s.redirect_url: %q: the path must be %s (no query, no fragment)", f, o.RedirectURL.String(), OIDCCallbackPath)
	}
	if !o.PostLogoutRedirectURL.IsZero() && !httpURLValue(o.PostLogoutRedirectURL) {
		at(lineOr(o.PostLogoutRedirectURL.Line(), line), "%s.post_logout_redirect_url: %q must be an absolute http(s) URL", f, o.PostLogoutRedirectURL.String())
	}
	for _, s := range o.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n\"\\") {
			at(line, "%s.scopes: %q is not a scope token", f, s)
		}
	}
	for field, v := range map[string]string{"roles_claim": o.RolesClaim, "groups_claim": o.GroupsClaim, "tenant_claim": o.TenantClaim} {
		if v == "" {
			at(line, "%s.%s: must not be empty", f, field)
		}
	}
	for g, r := range o.GroupRoles {
		if r == "" {
			at(line, "%s.group_roles: group %q maps to an empty role", f, g)
		}
	}
	for k, v := range o.Attributes {
		switch {
		case k == "" || v == "":
			at(line, "%s.attributes: %q: %q: names must not be empty", f, k, v)
		case sessionClaims[k]:
			at(line, "%s.attributes: %q is a claim of our session tokens; name the attribute otherwise", f, k)
		}
	}
	if o.ClockSkew < 0 || o.ClockSkew > MaxClockSkew {
		at(line, "%s.clock_skew: %s is outside 0..%s", f, o.ClockSkew, MaxClockSkew)
	}
	if o.Timeout < 0 {
		at(line, "%s.timeout: must not be negative", f)
	}
	if o.MaxPending < 0 {
		at(line, "%s.max_pending: must not be negative", f)
	}
	if o.StartsPerMinute < 0 {
		at(line, "%s.starts_per_minute: must not be negative", f)
	}
}
