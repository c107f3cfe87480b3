package ratelimit

import (
	"context"
	"fmt"

	"github.com/kailash-gw/kailash/internal/telemetry"
)

// pinger is a backend that can tell whether its store answers (Redis).
type pinger interface {
	Ping(ctx context.Context) error
}

// readiness is the rate-limit service's /readyz: with a backend that has a
// store to reach (ratelimit.backend redis), a check "redis" that PINGs it.
// A ratelimit whose Redis is down answers by its fail mode (open: every
// request passes; closed: every request under a quota gets 429), so it is
// not ready: Envoy's ratelimit filter, finding no ready replica, applies
// the same fail mode itself. The memory backend has nothing to check.
func (s *Server) readiness() *telemetry.Readiness {
	r := telemetry.NewReadiness("ratelimit")
	if p, ok := s.backend.(pinger); ok {
		r.Add(telemetry.Check{Name: s.kind, Run: func(ctx context.Context) error {
			if err := p.Ping(ctx); err != nil {
				return fmt.Errorf("ratelimit.%s: %w (fail mode %s applies)", s.kind, err, s.failMode())
			}
			return nil
		}})
	}
	return r
}

// Readiness is the server's readiness checks (its /readyz).
func (s *Server) Readiness() *telemetry.Readiness { return s.ready }
