package config

import (
	"fmt"
	"net/url"
	"os"
	"time"
)

// SAML is a tenant's SAML 2.0 service provider (GET /auth/saml/login,
// POST /auth/saml/acs, GET /auth/saml/metadata) and the one IdP it trusts.
// Its fields mirror extauthz/samlsp.Config (this package imports nothing of
// ours). Files are relative to the config file.
type SAML struct {
	// EntityID is our SP entity id: the audience the IdP must name.
	EntityID string `yaml:"entity_id"`
	// ACSURL is the absolute URL of POST /auth/saml/acs as the browser
	// reaches it (the response's Destination and Recipient must equal it).
	ACSURL URL `yaml:"acs_url"`
	// MetadataURL is the absolute URL of GET /auth/saml/metadata (optional).
	MetadataURL URL `yaml:"metadata_url"`
	// KeyFile and CertFile are our PEM key pair (signs AuthnRequests).
	KeyFile  string `yaml:"key_file"`
	CertFile string `yaml:"cert_file"`
	// Exactly one of IDPMetadataFile and IDPMetadataURL.
	IDPMetadataFile string `yaml:"idp_metadata_file"`
	IDPMetadataURL  URL    `yaml:"idp_metadata_url"`
	// AllowIDPInitiated accepts unsolicited responses (no InResponseTo).
	AllowIDPInitiated bool `yaml:"allow_idp_initiated"`
	// AllowSHA1 accepts IdP signatures made with SHA-1 (refused by default).
	AllowSHA1 bool `yaml:"allow_sha1"`
	// Attributes names the SAML attributes read into the identity (empty:
	// the ADFS / Entra ID claims URIs).
	Attributes SAMLAttributes `yaml:"attributes"`
	// GroupRoles maps a group, as the IdP sends it, to a role.
	GroupRoles map[string]string `yaml:"group_roles"`
	// MetadataTimeout bounds fetching IDPMetadataURL (default 10s);
	// MetadataRetry is the least time between two attempts while it is
	// missing (default 10s).
	MetadataTimeout time.Duration `yaml:"metadata_timeout"`
	MetadataRetry   time.Duration `yaml:"metadata_retry"`
}

// SAMLAttributes names SAML attributes (by Name or FriendlyName).
type SAMLAttributes struct {
	Email       string `yaml:"email"`
	DisplayName string `yaml:"display_name"`
	GivenName   string `yaml:"given_name"`
	FamilyName  string `yaml:"family_name"`
	Groups      string `yaml:"groups"`
	// Extra maps policy attribute names (department, clearance, ...) to
	// SAML attribute names.
	Extra map[string]string `yaml:"extra"`
}

// OIDCIssuer is one external OIDC / JWT issuer a tenant trusts, its keys
// found by discovery or an explicit JWKS URL and kept fresh in the
// background (the last good keys keep verifying while the IdP is down).
type OIDCIssuer struct {
	// Issuer is the exact iss value (and, without jwks_url or
	// discovery_url, the base of /.well-known/openid-configuration).
	Issuer    string   `yaml:"issuer"`
	Audiences []string `yaml:"audiences"`
	// At most one of DiscoveryURL and JWKSURL.
	DiscoveryURL URL `yaml:"discovery_url"`
	JWKSURL      URL `yaml:"jwks_url"`
	// ClockSkew on exp/nbf/iat (default 30s, at most 5m).
	ClockSkew time.Duration `yaml:"clock_skew"`
	// RolesClaim (default "roles") and TenantClaim (default "tenant"), as in jwt.
	RolesClaim  string `yaml:"roles_claim"`
	TenantClaim string `yaml:"tenant_claim"`
	// RefreshInterval of the key set (default 15m); MinRefetch between two
	// fetches triggered by unknown kids (default 10s); InitialBackoff and
	// MaxBackoff of retries while the IdP is down (defaults 1s, 30s);
	// Timeout of one request (default 5s).
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	MinRefetch      time.Duration `yaml:"min_refetch"`
	InitialBackoff  time.Duration `yaml:"initial_backoff"`
	MaxBackoff      time.Duration `yaml:"max_backoff"`
	Timeout         time.Duration `yaml:"timeout"`

	// MinRefreshInterval: floor under the JWKS response's Cache-Control
	// max-age (default 1m; refresh_interval is the ceiling).
	MinRefreshInterval time.Duration `yaml:"min_refresh_interval"`
	// RequireTenantClaim, as in jwt (default: see identity.go).
	RequireTenantClaim *bool `yaml:"require_tenant_claim"`
	claimDefaulted     bool  // as in JWT
}

// Configured reports whether the tenant's jwt section is used at all (a
// tenant with issuers may leave it out).
func (j JWT) Configured() bool {
	return j.Issuer != "" || len(j.Audiences) > 0 || j.JWKSFile != "" || !j.JWKSURL.IsZero()
}

func (c *Config) setFederationDefaults() {
	for i := range c.Tenants {
		for k := range c.Tenants[i].Issuers {
			o := &c.Tenants[i].Issuers[k]
			if o.ClockSkew == 0 {
				o.ClockSkew = DefaultClockSkew
			}
			if o.RolesClaim == "" {
				o.RolesClaim = "roles"
			}
			if o.TenantClaim == "" {
				o.TenantClaim = "tenant"
			}
		}
	}
}

func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

// validateFederation checks every tenant's saml and issuers sections.
func (c *Config) validateFederation(at func(line int, format string, args ...any)) {
	for _, t := range c.Tenants {
		name := tenantName(t.ID)
		if !t.JWT.Configured() && len(t.Issuers) == 0 {
			at(t.Line, "%s: jwt or issuers: the tenant must trust at least one token issuer", name)
		}
		seen := map[string]bool{}
		if t.JWT.Configured() {
			seen[t.JWT.Issuer] = true
		}
		for i, o := range t.Issuers {
			f := fmt.Sprintf("%s: issuers[%d]", name, i)
			switch {
			case o.Issuer == "":
				at(t.Line, "%s.issuer: required", f)
			case seen[o.Issuer]:
				at(t.Line, "%s.issuer: %q is trusted twice by this tenant (jwt or another issuer)", f, o.Issuer)
			case o.Issuer == c.Sessions.Issuer:
				at(t.Line, "%s.issuer: %q is the issuer of our own session tokens (sessions.issuer)", f, o.Issuer)
			case o.JWKSURL.IsZero() && o.DiscoveryURL.IsZero() && !httpURL(o.Issuer):
				at(t.Line, "%s.issuer: %q: discovery needs an http(s) issuer; or set jwks_url", f, o.Issuer)
			}
			seen[o.Issuer] = true
			if len(o.Audiences) == 0 {
				at(t.Line, "%s.audiences: at least one audience is required", f)
			}
			if !o.JWKSURL.IsZero() && !o.DiscoveryURL.IsZero() {
				at(t.Line, "%s: give discovery_url or jwks_url, not both", f)
			}
			for field, u := range map[string]URL{"jwks_url": o.JWKSURL, "discovery_url": o.DiscoveryURL} {
				if !u.IsZero() && !httpURLValue(u) {
					at(lineOr(u.Line(), t.Line), "%s.%s: %q must be an http(s) URL", f, field, u.String())
				}
			}
			if o.ClockSkew < 0 || o.ClockSkew > MaxClockSkew {
				at(t.Line, "%s.clock_skew: %s is outside 0..%s", f, o.ClockSkew, MaxClockSkew)
			}
			for field, d := range map[string]time.Duration{"refresh_interval": o.RefreshInterval, "min_refetch": o.MinRefetch,
				"initial_backoff": o.InitialBackoff, "max_backoff": o.MaxBackoff, "timeout": o.Timeout} {
				if d < 0 {
					at(t.Line, "%s.%s: must not be negative", f, field)
				}
			}
		}
		if t.SAML != nil {
			c.validateSAML(at, t.Line, name, t.SAML)
		}
	}
}

func (c *Config) validateSAML(at func(line int, format string, args ...any), line int, name string, s *SAML) {
	if s.EntityID == "" {
		at(line, "%s: saml.entity_id: required", name)
	}
	if !httpURLValue(s.ACSURL) {
		at(line, "%s: saml.acs_url: %q must be an absolute http(s) URL (of /auth/saml/acs)", name, s.ACSURL.String())
	}
	if !s.MetadataURL.IsZero() && !httpURLValue(s.MetadataURL) {
		at(line, "%s: saml.metadata_url: %q must be an absolute http(s) URL", name, s.MetadataURL.String())
	}
	for field, p := range map[string]string{"key_file": s.KeyFile, "cert_file": s.CertFile} {
		if p == "" {
			at(line, "%s: saml.%s: required", name, field)
		} else if _, err := os.Stat(c.Path(p)); err != nil {
			at(line, "%s: saml.%s: %v", name, field, err)
		}
	}
	switch {
	case s.IDPMetadataFile == "" && s.IDPMetadataURL.IsZero():
		at(line, "%s: saml: one of idp_metadata_file or idp_metadata_url is required", name)
	case s.IDPMetadataFile != "" && !s.IDPMetadataURL.IsZero():
		at(line, "%s: saml: give idp_metadata_file or idp_metadata_url, not both", name)
	case s.IDPMetadataFile != "":
		if _, err := os.Stat(c.Path(s.IDPMetadataFile)); err != nil {
			at(line, "%s: saml.idp_metadata_file: %v", name, err)
		}
	case !httpURLValue(s.IDPMetadataURL):
		at(line, "%s: saml.idp_metadata_url: %q must be an http(s) URL", name, s.IDPMetadataURL.String())
	}
	for field, d := range map[string]time.Duration{"metadata_timeout": s.MetadataTimeout, "metadata_retry": s.MetadataRetry} {
		if d < 0 {
			at(line, "%s: saml.%s: must not be negative", name, field)
		}
	}
	for k, v := range s.Attributes.Extra {
		if k == "" || v == "" {
			at(line, "%s: saml.attributes.extra: %q: %q: names must not be empty", name, k, v)
		}
	}
	for g, r := range s.GroupRoles {
		if r == "" {
			at(line, "%s: saml.group_roles: group %q maps to an empty role", name, g)
		}
	}
}
