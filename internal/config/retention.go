package config

import "time"

// Retention is how long the runner keeps what it records, and how often it
// purges the rest (docs/deploy.md, "Retention"). A zero duration keeps that
// table forever.
type Retention struct {
	// Executions is how long a finished execution (any status but running)
	// and its node results are kept after it finished; 0 keeps them forever.
	Executions time.Duration `yaml:"executions"`
	// Audit is how long audit_log rows (the audit_log node's records) are
	// kept after they were written; 0 keeps them forever.
	Audit time.Duration `yaml:"audit"`
	// Interval is how often the runner purges, when Executions or Audit is
	// set (default 1h, at least 1m).
	Interval time.Duration `yaml:"interval"`
}

// Retention bounds.
const (
	// DefaultRetentionInterval is runner.retention.interval unless set.
	DefaultRetentionInterval = time.Hour
	// MinRetentionInterval is the shortest interval: each purge walks
	// every tenant's tables.
	MinRetentionInterval = time.Minute
	// MinRetention is the shortest retention: a client polling an
	// asynchronous execution must still find its result after it ended.
	MinRetention = time.Minute
)

// Enabled reports whether anything is purged.
func (r Retention) Enabled() bool { return r.Executions > 0 || r.Audit > 0 }

// PurgeInterval is Interval or its default.
func (r Retention) PurgeInterval() time.Duration {
	if r.Interval == 0 {
		return DefaultRetentionInterval
	}
	return r.Interval
}

func (c *Config) validateRetention(at func(line int, format string, args ...any)) {
	r := c.Runner.Retention
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"executions", r.Executions}, {"audit", r.Audit}} {
		switch {
		case f.v < 0:
			at(0, "runner.retention.%s: %s is negative (0 keeps them forever)", f.name, f.v)
		case f.v > 0 && f.v < MinRetention:
			at(0, "runner.retention.%s: %s is too short (at least %s; 0 keeps them forever)", f.name, f.v, MinRetention)
		}
	}
	switch {
	case r.Interval < 0:
		at(0, "runner.retention.interval: %s is negative (0 is the default %s)", r.Interval, DefaultRetentionInterval)
	case r.Interval > 0 && r.Interval < MinRetentionInterval:
		at(0, "runner.retention.interval: %s is too short (at least %s; 0 is the default %s)", r.Interval, MinRetentionInterval, DefaultRetentionInterval)
	}
}
