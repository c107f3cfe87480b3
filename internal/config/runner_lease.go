package config

import "time"

// MinLeaseTTL is the shortest runner.lease_ttl: a heartbeat every third of
// it must reach the database in time.
const MinLeaseTTL = time.Second

func (c *Config) validateLease(at func(line int, format string, args ...any)) {
	if ttl := c.Runner.LeaseTTL; ttl != 0 && ttl < MinLeaseTTL {
		at(0, "runner.lease_ttl: %s is too short (at least %s; 0 is the default 15s)", ttl, MinLeaseTTL)
	}
}
