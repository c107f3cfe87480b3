package config

import (
	"strings"
)

// Login is a tenant's hardening of the login service (/auth/*) and of
// cookie-authenticated requests, and its OIDC browser login.
type Login struct {
	// AllowedOrigins are origins (scheme://host[:port]) besides the
	// tenant's own domains from which a cookie-authenticated unsafe
	// request (POST, PUT, PATCH, DELETE, ...) is accepted. The origins of
	// cors.allow_origins count too when cors.allow_credentials is set.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// SAMLMaxPending bounds the tenant's pending SAML AuthnRequests
	// (default DefaultSAMLMaxPending); a full tenant refuses new login
	// starts and never pushes out another tenant's.
	SAMLMaxPending int `yaml:"saml_max_pending"`
	// SAMLStartsPerMinute bounds SAML login starts per client address and
	// tenant (default DefaultSAMLStartsPerMinute); beyond it: 429.
	SAMLStartsPerMinute int `yaml:"saml_starts_per_minute"`
	// OIDC is the tenant's browser login with an OpenID provider
	// (authorization code + PKCE; oidc_login.go).
	OIDC *OIDCLogin `yaml:"oidc"`
}

// Defaults of the login section.
const (
	DefaultSAMLMaxPending      = 10_000
	DefaultSAMLStartsPerMinute = 60
)

// Values of mfa.enrolment.
const (
	// EnrolmentSelf: a user enrols a TOTP secret with the password alone
	// (trust on first use); an admin may still issue enrolment codes.
	EnrolmentSelf = "self"
	// EnrolmentAdmin: enrolment needs a one-time code an admin issued
	// (POST /auth/totp/provision); self-enrolment is refused.
	EnrolmentAdmin = "admin"
)

func (c *Config) setLoginDefaults() {
	c.setOIDCLoginDefaults()
	for i := range c.Tenants {
		l := &c.Tenants[i].Login
		if l.SAMLMaxPending == 0 {
			l.SAMLMaxPending = DefaultSAMLMaxPending
		}
		if l.SAMLStartsPerMinute == 0 {
			l.SAMLStartsPerMinute = DefaultSAMLStartsPerMinute
		}
		m := &c.Tenants[i].MFA
		if m.Enrolment == "" {
			m.Enrolment = EnrolmentSelf
		}
		if m.AdminRoles == nil {
			m.AdminRoles = []string{"admin"}
		}
	}
}

func (c *Config) validateLogin(at func(line int, format string, args ...any)) {
	for _, t := range c.Tenants {
		name := "tenant " + quote(t.ID)
		for _, o := range t.Login.AllowedOrigins {
			if !validOrigin(o) || strings.Contains(o, "*") {
				at(t.Line, "%s: login.allowed_origins: %q is not an origin (scheme://host[:port], no wildcard)", name, o)
			}
		}
		if t.Login.SAMLMaxPending < 0 {
			at(t.Line, "%s: login.saml_max_pending: must not be negative", name)
		}
		if t.Login.SAMLStartsPerMinute < 0 {
			at(t.Line, "%s: login.saml_starts_per_minute: must not be negative", name)
		}
		if t.Login.OIDC != nil {
			c.validateOIDCLogin(at, t.Line, name, t.Login.OIDC)
		}
		m := t.MFA
		switch m.Enrolment {
		case "", EnrolmentSelf, EnrolmentAdmin:
		default:
			at(t.Line, "%s: mfa.enrolment: %q: want %s or %s", name, m.Enrolment, EnrolmentSelf, EnrolmentAdmin)
		}
		if !m.NotifyURL.IsZero() {
			if !httpURLValue(m.NotifyURL) || m.NotifyURL.URL().User != nil {
				at(t.Line, "%s: mfa.notify_url: %q: want an http(s) URL without credentials", name, m.NotifyURL.String())
			}
		}
	}
}

func quote(s string) string { return `"` + s + `"` }
