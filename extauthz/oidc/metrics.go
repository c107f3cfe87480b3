package oidc

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are shared by every key source (a tenant's jwt.jwks_url and its
// issuers[]), labelled by issuer. A nil *Metrics records nothing.
type Metrics struct {
	fetches *prometheus.CounterVec
	stale   *prometheus.GaugeVec
	ready   *prometheus.GaugeVec
	success *prometheus.GaugeVec
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
		success: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kailash_oidc_jwks_last_success_timestamp_seconds",
			Help: "Unix time of the issuer's last successful JWKS fetch (0: never).",
		}, []string{"issuer"}),
	}
	reg.MustRegister(m.fetches, m.stale, m.ready, m.success)
	return m
}

func (m *Metrics) fetched(issuer, result string) {
	if m != nil {
		m.fetches.WithLabelValues(issuer, result).Inc()
	}
}

func (m *Metrics) succeeded(issuer string, at time.Time) {
	if m != nil {
		m.success.WithLabelValues(issuer).Set(float64(at.UnixNano()) / 1e9)
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
