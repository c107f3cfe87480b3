package config

import "time"

// Explain is authz's memory of recent refusals, which `kailash explain`
// and GET /v1/admin/explain/{id} answer from: every Check that did not
// allow, and every answer of 400 or above Envoy reports (its gRPC access
// log to authz), with what the rate-limit service counted for them.
type Explain struct {
	// Records is how many refusals are kept, the oldest forgotten first
	// (default 4096; 0 keeps none and Envoy reports nothing).
	Records *int `yaml:"records"`
	// TTL is how long a record stays in sessions.redis, where authz
	// replicas share them (default 1h; without sessions.redis records live
	// in each replica's memory, up to Records).
	TTL time.Duration `yaml:"ttl"`
}

// DefaultExplainTTL is authz.explain.ttl when unset.
const DefaultExplainTTL = time.Hour

// ExplainTTL is authz.explain.ttl in force.
func (c *Config) ExplainTTL() time.Duration {
	if c.Authz.Explain.TTL <= 0 {
		return DefaultExplainTTL
	}
	return c.Authz.Explain.TTL
}

// DefaultExplainRecords is authz.explain.records when unset.
const DefaultExplainRecords = 4096

// maxExplainRecords bounds authz.explain.records (each record of a policy
// denial holds its input).
const maxExplainRecords = 1_000_000

// ExplainRecords is authz.explain.records in force.
func (c *Config) ExplainRecords() int {
	if c.Authz.Explain.Records == nil {
		return DefaultExplainRecords
	}
	return *c.Authz.Explain.Records
}

func (c *Config) validateExplain(at func(line int, format string, args ...any)) {
	if n := c.ExplainRecords(); n < 0 || n > maxExplainRecords {
		at(0, "authz.explain.records: %d: give 0 (off) to %d", n, maxExplainRecords)
	}
	if c.Authz.Explain.TTL < 0 {
		at(0, "authz.explain.ttl: must not be negative")
	}
}
