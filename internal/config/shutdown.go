package config

import "time"

// Shutdown is how a process stops on SIGTERM or Ctrl-C: it first reports
// not ready (/readyz 503, Envoy's health check failing), waits PreStopDelay
// so load balancers stop sending, stops accepting and lets in-flight
// requests finish for at most DrainTimeout, then stops. A second signal
// stops at once. Read at start; changes need a restart.
type Shutdown struct {
	// DrainTimeout bounds the wait for in-flight requests (default 15s).
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// PreStopDelay is how long the process keeps accepting, already
	// reporting not ready, before it stops accepting (default 0).
	PreStopDelay time.Duration `yaml:"pre_stop_delay"`
}

// DefaultDrainTimeout is shutdown.drain_timeout when it is not set.
const DefaultDrainTimeout = 15 * time.Second

// MaxShutdownWait bounds drain_timeout and pre_stop_delay.
const MaxShutdownWait = 10 * time.Minute

func (c *Config) setShutdownDefaults() {
	if c.Shutdown.DrainTimeout == 0 {
		c.Shutdown.DrainTimeout = DefaultDrainTimeout
	}
}

func (c *Config) validateShutdown(at func(line int, format string, args ...any)) {
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"shutdown.drain_timeout", c.Shutdown.DrainTimeout}, {"shutdown.pre_stop_delay", c.Shutdown.PreStopDelay}} {
		if f.v < 0 || f.v > MaxShutdownWait {
			at(0, "%s: %s is outside 0..%s", f.name, f.v, MaxShutdownWait)
		}
	}
}
