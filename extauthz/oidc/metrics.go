package oidc

import (
	"sync"
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
	age     *prometheus.Desc

	mu   sync.Mutex // guards srcs
	srcs map[string]*Keys
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
	m.age = prometheus.NewDesc("kailash_oidc_jwks_age_seconds",
		"Age of the keys the issuer's tokens are verified with (since they were fetched from the IdP), by where they came from: fetch (this process) or cache (the disk cache, read at start while the IdP was down).",
		[]string{"issuer", "source"}, nil)
	m.srcs = map[string]*Keys{}
	reg.MustRegister(m.fetches, m.stale, m.ready, m.success, ageCollector{m})
	return m
}

// track reports the age of k's keys (the latest source of an issuer wins).
func (m *Metrics) track(k *Keys) {
	if m != nil {
		m.mu.Lock()
		m.srcs[k.cfg.Issuer] = k
		m.mu.Unlock()
	}
}

// untrack stops reporting k (its refresh loop ended).
func (m *Metrics) untrack(k *Keys) {
	if m != nil {
		m.mu.Lock()
		if m.srcs[k.cfg.Issuer] == k {
			delete(m.srcs, k.cfg.Issuer)
		}
		m.mu.Unlock()
	}
}

type ageCollector struct{ m *Metrics }

func (c ageCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.m.age }

func (c ageCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	srcs := make([]*Keys, 0, len(c.m.srcs))
	for _, k := range c.m.srcs {
		srcs = append(srcs, k)
	}
	c.m.mu.Unlock()
	for _, k := range srcs {
		k.mu.Lock()
		known, at, cached, now := k.set != nil, k.fetchedAt, k.fromCache, k.now()
		k.mu.Unlock()
		if !known {
			continue
		}
		src := "fetch"
		if cached {
			src = "cache"
		}
		ch <- prometheus.MustNewConstMetric(c.m.age, prometheus.GaugeValue, now.Sub(at).Seconds(), k.cfg.Issuer, src)
	}
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
