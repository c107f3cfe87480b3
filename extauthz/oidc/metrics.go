package oidc

import "github.com/prometheus/client_golang/prometheus"

// Metrics are shared by every issuer's Keys. A nil *Metrics records nothing.
type Metrics struct {
	fetches *prometheus.CounterVec
	stale   *prometheus.GaugeVec
	ready   *prometheus.GaugeVec
}

// NewMetrics registers the OIDC key metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kailash_oidc_jwks_fetches_total",
			Help: "JWKS fetches by issuer and result: ok, unchanged, error, rate_limited (an unknown-kid refetch refused).",
		}, []string{"issuer", "result"}),
		stale: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kailash_oidc_jwks_stale",
			Help: "1 while the issuer cannot be reached and its last good keys keep verifying.",
		}, []string{"issuer"}),
		ready: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kailash_oidc_jwks_ready",
			Help: "1 once the issuer's keys are known (0: its tokens get 503).",
		}, []string{"issuer"}),
	}
	reg.MustRegister(m.fetches, m.stale, m.ready)
	return m
}

func (m *Metrics) fetched(issuer, result string) {
	if m != nil {
		m.fetches.WithLabelValues(issuer, result).Inc()
	}
}

func (m *Metrics) setStale(issuer string, stale bool) {
	if m != nil {
		m.stale.WithLabelValues(issuer).Set(b2f(stale))
	}
}

func (m *Metrics) setReady(issuer string, ready bool) {
	if m != nil {
		m.ready.WithLabelValues(issuer).Set(b2f(ready))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
