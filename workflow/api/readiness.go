package api

import (
	"context"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/telemetry"
)

// readiness is the runner's /readyz:
//
//   - store ("postgres" with runner.postgres_dsn, else "data_dir"): a
//     round trip to PostgreSQL on the runner's pool, or the SQLite data
//     directory is there. Without it no execution can start or record its
//     end.
//   - identity_jwks, with runner.identity_jwks only: the keys that verify
//     the gateway's identity tokens are known (read, or fetched from
//     authz; the last good ones count). Without them every request is
//     refused with 401.
func (s *Server) readiness(cfg *config.Config) *telemetry.Readiness {
	name := "data_dir"
	if cfg.Runner.PostgresDSN != "" {
		name = "postgres"
	}
	r := telemetry.NewReadiness("runner", telemetry.Check{Name: name, Run: s.store.Ping})
	if s.verify != nil {
		r.Add(telemetry.Check{Name: "identity_jwks", Run: func(ctx context.Context) error {
			_, err := s.verify.keySet(ctx, false)
			return err
		}})
	}
	return r
}

// Readiness is the runner's readiness checks (its /readyz).
func (s *Server) Readiness() *telemetry.Readiness { return s.ready }
