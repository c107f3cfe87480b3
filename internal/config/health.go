package config

import (
	"strings"

	"github.com/kailash-gw/kailash/internal/wire"
)

// Values of envoy.health_check_path.
const (
	// DefaultHealthCheckPath is under a prefix no tenant route uses.
	DefaultHealthCheckPath = "/.kailash/healthz"
	HealthCheckOff         = "off"
)

// HealthCheckPath is the path Envoy's health check filter answers on ""
// when it is off (envoy.health_check_path).
func (c *Config) HealthCheckPath() string {
	switch p := c.Envoy.HealthCheckPath; p {
	case HealthCheckOff:
		return ""
	case "":
		return DefaultHealthCheckPath
	default:
		return p
	}
}

// validateHealthCheck checks envoy.health_check_path: an absolute path,
// no query, fragment, spaces or dot segments, and not under /auth/ (the
// login endpoints).
func (c *Config) validateHealthCheck(at func(int, string, ...any)) {
	p := c.Envoy.HealthCheckPath
	if p == "" || p == HealthCheckOff {
		return
	}
	switch {
	case !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//"):
		at(0, "envoy.health_check_path: %q: want an absolute path such as %s, or %q", p, DefaultHealthCheckPath, HealthCheckOff)
	case strings.ContainsAny(p, "?#%\\ \t\r\n") || len(p) > 256:
		at(0, "envoy.health_check_path: %q: no query, fragment, escapes or spaces (at most 256 bytes)", p)
	case strings.Contains(p+"/", "/./") || strings.Contains(p+"/", "/../"):
		at(0, "envoy.health_check_path: %q: no . or .. segments", p)
	case p == "/" || strings.HasPrefix(p+"/", wire.AuthPrefix):
		at(0, "envoy.health_check_path: %q: would hide tenant routes or the login endpoints (%s)", p, wire.AuthPrefix)
	}
}
