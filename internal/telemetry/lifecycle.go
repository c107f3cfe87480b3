package telemetry

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// draining is set once the process has begun to shut down: every /readyz
// then answers 503, so load balancers stop sending before anything stops.
var draining atomic.Bool

// ErrDraining is the readiness error of a process shutting down.
var ErrDraining = errors.New("draining: the process is shutting down")

// SetDraining marks the whole process as shutting down (or, with false,
// not any more: tests).
func SetDraining(v bool) { draining.Store(v) }

// Draining reports whether SetDraining(true) was called.
func Draining() bool { return draining.Load() }

// shutdownGrace bounds how long ServeHTTP waits for in-flight requests
// when its context ends; nanoseconds.
var shutdownGrace atomic.Int64

func init() { shutdownGrace.Store(int64(5 * time.Second)) }

// SetShutdownGrace sets how long ServeHTTP lets in-flight requests finish
// after its context ends (shutdown.drain_timeout; default 5s).
func SetShutdownGrace(d time.Duration) {
	if d > 0 {
		shutdownGrace.Store(int64(d))
	}
}

// ShutdownGrace is the value SetShutdownGrace set.
func ShutdownGrace() time.Duration { return time.Duration(shutdownGrace.Load()) }

// ConfigMetrics are a component's view of the config file: the revision in
// force and when it was applied. Every component registers its own (one
// registry per component), so each /metrics tells which revision it serves.
type ConfigMetrics struct {
	revision prometheus.Gauge
	applied  prometheus.Gauge
}

// NewConfigMetrics registers kailash_config_revision and
// kailash_config_last_applied_timestamp_seconds with reg; the revision
// starts at 1 (the config the process started with), applied now.
func NewConfigMetrics(reg prometheus.Registerer) (*ConfigMetrics, error) {
	m := &ConfigMetrics{
		revision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kailash_config_revision",
			Help: "Revision of the config file in force: 1 at start, +1 for each edit applied by every component (a rejected edit changes nothing).",
		}),
		applied: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kailash_config_last_applied_timestamp_seconds",
			Help: "When the revision in force was applied (Unix time).",
		}),
	}
	for _, c := range []prometheus.Collector{m.revision, m.applied} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.Applied(1, time.Now())
	return m, nil
}

// Applied records that revision seq is in force since at.
func (m *ConfigMetrics) Applied(seq uint64, at time.Time) {
	m.revision.Set(float64(seq))
	m.applied.Set(float64(at.UnixNano()) / 1e9)
}
