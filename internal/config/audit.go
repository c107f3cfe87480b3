package config

import "strings"

// Audit records administrative actions — config reloads and tenant
// changes, policy bundle activations, signing and data key rotations,
// session revocations — as structured events (who, what, when, outcome).
// They always go to the process log (message "audit"); File adds a JSON
// lines file of their own.
type Audit struct {
	// File is the JSON-lines audit file (relative to this file), rotated
	// at MaxSizeMB (default 100) keeping MaxBackups (default 10).
	File       string `yaml:"file"`
	MaxSizeMB  int    `yaml:"max_size_mb"`
	MaxBackups int    `yaml:"max_backups"`
	// Mask removes more event detail fields, as decision log masks do
	// ("/detail/email"); fields whose name says password, secret, token,
	// authorization, cookie, private_key or credential are always removed.
	Mask []string `yaml:"mask"`
}

func (c *Config) validateAudit(at func(line int, format string, args ...any)) {
	a := c.Audit
	if a.MaxSizeMB < 0 || a.MaxBackups < 0 {
		at(0, "audit.max_size_mb, audit.max_backups: must not be negative")
	}
	for _, m := range a.Mask {
		if p := strings.Split(strings.Trim(m, "/"), "/"); len(p) < 2 || p[0] != "detail" {
			at(0, "audit.mask: %q: want a path under /detail, e.g. /detail/email", m)
		}
	}
}
