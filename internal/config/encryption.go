package config

import (
	"os"
	"strings"
)

// Encryption is runner.encryption: field-level encryption at rest of the
// runner's execution payloads, node results, audit details and identity
// attributes (package internal/sealed).
//
// Keys come from the environment (KAILASH_DATA_KEYS="id1:base64,id2:base64",
// the active one KAILASH_DATA_KEY_ACTIVE or the last) or from KeysFile.
// Without either, a runner on SQLite files (runner.data_dir) generates a key
// into <data_dir>/data-keys.yaml (mode 0600) and says so in its log; a runner
// in memory or on PostgreSQL runs without encryption and warns, unless
// Required.
type Encryption struct {
	// KeysFile (relative to the config file) is a YAML keys file, mode 0600:
	// {active: id, keys: [{id, key}]}. `kailash keys rotate` writes to it.
	KeysFile string `yaml:"keys_file"`
	// Required refuses to start without data keys (no generated key, no
	// running in clear).
	Required bool `yaml:"required"`
}

// validateEncryption checks runner.encryption.
func (c *Config) validateEncryption(at func(line int, format string, args ...any)) {
	e := c.Runner.Encryption
	if e.KeysFile != "" {
		if strings.HasPrefix(e.KeysFile, "http://") || strings.HasPrefix(e.KeysFile, "https://") {
			at(0, "runner.encryption.keys_file: must be a file, not a URL")
		} else if fi, err := os.Stat(c.Path(e.KeysFile)); err != nil {
			at(0, "runner.encryption.keys_file: %v", err)
		} else if fi.Mode().Perm()&0o077 != 0 {
			at(0, "runner.encryption.keys_file: %s has mode %04o: group or others can read the data keys (chmod 600)", c.Path(e.KeysFile), fi.Mode().Perm())
		}
	}
}
