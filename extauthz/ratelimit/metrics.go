package ratelimit

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	decisions     *prometheus.CounterVec
	backendErrors prometheus.Counter
	breakerOpen   prometheus.Gauge
	rules         prometheus.Gauge
	latency       prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kailash_ratelimit_decisions_total",
			Help: "Descriptor decisions by result: ok, over_limit, shadow_over_limit (envoyproxy/ratelimit shadow_mode: answered OK), fail_open, fail_closed, unknown_domain.",
		}, []string{"result"}),
		backendErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kailash_ratelimit_backend_errors_total",
			Help: "Decisions for which the counter store could not be reached (the fail mode applied).",
		}),
		breakerOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kailash_ratelimit_breaker_open",
			Help: "1 while the Redis circuit breaker is open.",
		}),
		rules: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kailash_ratelimit_quotas",
			Help: "Quotas loaded from the config.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kailash_ratelimit_decision_seconds",
			Help:    "Time to answer ShouldRateLimit.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1},
		}),
	}
	reg.MustRegister(m.decisions, m.backendErrors, m.breakerOpen, m.rules, m.latency)
	return m
}
