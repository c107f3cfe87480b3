package config

import "time"

// JWKSCache is authz.jwks_cache: where ext_authz keeps the last good JWKS
// (and OIDC discovery document) of every key source (a tenant's
// jwt.jwks_url, each issuers[] entry), so that authz restarted while an IdP
// is down keeps verifying that IdP's tokens with the keys it had.
//
// It is on by default: a restart during an IdP outage must not turn every
// token of that IdP into a 503 (istio#58101). The files hold public keys
// only (mode 0600, directory 0700) and are used only when the first fetch
// after start fails, never when the IdP answers.
type JWKSCache struct {
	// Dir (relative to the config file) holds one file per key source
	// (default "jwks-cache" next to the config file; "off" disables the
	// cache; a config not read from a file has no default directory).
	Dir string `yaml:"dir"`
	// MaxStale is the oldest key set ext_authz verifies with: keys last
	// fetched longer ago, from the cache or kept in memory through an
	// outage, are no longer used and the issuer's tokens get 503 (fail
	// closed) until the IdP answers (default 24h).
	MaxStale time.Duration `yaml:"max_stale"`
}

// DefaultJWKSCacheDir and DefaultJWKSMaxStale are the defaults of
// authz.jwks_cache.
const (
	DefaultJWKSCacheDir = "jwks-cache"
	DefaultJWKSMaxStale = 24 * time.Hour
)

// JWKSCacheDir is the cache directory, resolved against the config file's
// directory ("" when the cache is off).
func (c *Config) JWKSCacheDir() string {
	switch d := c.Authz.JWKSCache.Dir; d {
	case "off":
		return ""
	case "":
		if c.File == "" {
			return "" // a config built in memory has no directory to default to
		}
		return c.Path(DefaultJWKSCacheDir)
	default:
		return c.Path(d)
	}
}

// JWKSMaxStale is authz.jwks_cache.max_stale or its default.
func (c *Config) JWKSMaxStale() time.Duration {
	if d := c.Authz.JWKSCache.MaxStale; d > 0 {
		return d
	}
	return DefaultJWKSMaxStale
}
