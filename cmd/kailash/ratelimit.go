package main

import (
	"context"
	"log/slog"

	"golang.org/x/sync/errgroup"

	"github.com/kailash-gw/kailash/extauthz/ratelimit"
	"github.com/kailash-gw/kailash/internal/config"
)

// startRateLimit starts the global rate-limit service in g when the config
// sets ratelimit.grpc, and returns it as the updaters to follow config
// changes (none when it is not configured).
func startRateLimit(ctx context.Context, g *errgroup.Group, cfg *config.Config, log *slog.Logger) ([]updater, error) {
	if cfg.RateLimit.GRPC.String() == "" {
		return nil, nil
	}
	s, err := ratelimit.New(cfg, ratelimit.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	g.Go(func() error { return s.Serve(ctx) })
	return []updater{s}, nil
}
