package extauthz

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kailash-gw/kailash/internal/telemetry"
	"github.com/kailash-gw/kailash/policies"
)

// readiness is authz's /readyz:
//
//   - config: the tenants are loaded (a snapshot is in force);
//   - policy: the active bundle (and the shadow one, when set) is compiled
//     and in force; a bundle that fails to reload later keeps the last
//     good version serving, so this stays ready;
//   - sessions_redis, with sessions.redis only: Redis answers a PING
//     within sessions.redis.timeout; without it logins, sessions and
//     lockouts cannot work.
//
// A tenant's JWKS that cannot be fetched is not a readiness failure: it
// affects that tenant alone (its tokens get 503 until the keys are known)
// and taking every replica out of service would refuse every tenant. It
// shows as kailash_oidc_jwks_ready / _stale and their alerts.
func (s *Server) readiness() *telemetry.Readiness {
	r := telemetry.NewReadiness("authz",
		telemetry.CheckFunc("config", func() error {
			if s.snap.Load() == nil {
				return errors.New("no config loaded")
			}
			return nil
		}),
		telemetry.CheckFunc("policy", func() error {
			if err := engineLoaded("policy", s.engine); err != nil {
				return err
			}
			if s.shadow != nil {
				return engineLoaded("policy.shadow", s.shadow)
			}
			return nil
		}),
	)
	if s.auth != nil && s.auth.SharedStores() {
		r.Add(telemetry.Check{Name: "sessions_redis", Run: func(ctx context.Context) error {
			if err := s.auth.Ping(ctx); err != nil {
				return fmt.Errorf("sessions.redis: %w", err)
			}
			return nil
		}})
	}
	return r
}

func engineLoaded(field string, e *policies.Engine) error {
	if e == nil {
		return fmt.Errorf("%s: no policy engine", field)
	}
	if _, _, ok := e.Loaded(); !ok {
		return fmt.Errorf("%s: no bundle loaded from %s", field, e.Source())
	}
	return nil
}

// Readiness is the server's readiness checks (its /readyz).
func (s *Server) Readiness() *telemetry.Readiness { return s.ready }

// policyCollector exports the bundles in force:
// kailash_policy_revision_info{bundle,revision,source} 1 and
// kailash_policy_last_activation_timestamp_seconds{bundle}.
type policyCollector struct{ s *Server }

var (
	policyInfoDesc = prometheus.NewDesc("kailash_policy_revision_info",
		"Always 1; the labels name the policy bundle in force: bundle (active, shadow), revision (the manifest's, else a hash of the files) and source (directory, file, URL or embedded).",
		[]string{"bundle", "revision", "source"}, nil)
	policyActivatedDesc = prometheus.NewDesc("kailash_policy_last_activation_timestamp_seconds",
		"When the bundle in force was compiled and activated (Unix time); a rejected reload does not move it.",
		[]string{"bundle"}, nil)
)

func (c policyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- policyInfoDesc
	ch <- policyActivatedDesc
}

func (c policyCollector) Collect(ch chan<- prometheus.Metric) {
	for _, b := range []struct {
		name string
		e    *policies.Engine
	}{{"active", c.s.engine}, {"shadow", c.s.shadow}} {
		if b.e == nil {
			continue
		}
		rev, at, ok := b.e.Loaded()
		if !ok {
			continue
		}
		ch <- prometheus.MustNewConstMetric(policyInfoDesc, prometheus.GaugeValue, 1, b.name, rev, b.e.Source())
		ch <- prometheus.MustNewConstMetric(policyActivatedDesc, prometheus.GaugeValue, float64(at.UnixNano())/1e9, b.name)
	}
}
