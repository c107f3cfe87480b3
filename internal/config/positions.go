package config

import (
	"regexp"
	"strconv"
	"strings"

	"github.com/kailash-gw/kailash/internal/config/yamlcheck"
)

// fieldPathRe is the field path an error message starts with
// ("tenants[1].jwt.issuer: ...", "envoy.listener: give ...").
var fieldPathRe = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_-]*(?:\[\d+\])?(?:\.[A-Za-z0-9_<>-]+(?:\[\d+\])?)*)(?:[:, ]|$)`)

// tenantRe is the start of a message about one tenant: `tenant "acme": ...`.
var tenantRe = regexp.MustCompile(`^tenant "([^"]*)": (.*)$`)

// positionOf is where in the file the field an error message names is
// written: the message's leading field path, or the nearest of its parents
// the file writes (a value that came from a default or the environment is
// reported at its section). A message about a tenant by id is placed in
// that tenant's entry.
func (c *Config) positionOf(msg string) (yamlcheck.Pos, bool) {
	if len(c.positions) == 0 {
		return yamlcheck.Pos{}, false
	}
	prefix := ""
	if m := tenantRe.FindStringSubmatch(msg); m != nil {
		for i := range c.Tenants {
			if c.Tenants[i].ID == m[1] {
				prefix = "tenants[" + strconv.Itoa(i) + "]"
				break
			}
		}
		if prefix == "" {
			return yamlcheck.Pos{}, false
		}
		msg = m[2]
	}
	path := prefix
	if m := fieldPathRe.FindStringSubmatch(msg); m != nil {
		p := m[1]
		if prefix != "" && !strings.HasPrefix(p, "tenants[") {
			p = prefix + "." + p
		}
		path = p
	}
	for path != "" {
		if pos, ok := c.positions[path]; ok {
			return pos, true
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return yamlcheck.Pos{}, false
}
