package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"golang.org/x/sync/errgroup"

	"github.com/kailash-gw/kailash/extauthz/ratelimit"
	"github.com/kailash-gw/kailash/internal/config"
)

// newRateLimit builds the global rate-limit service of cfg's ratelimit
// section (backend, fail mode, quotas, addresses): the one construction
// `kailash up` (in process) and `kailash ratelimit` (alone) share. It is
// nil, with no error, when the config sets no ratelimit.grpc.
func newRateLimit(cfg *config.Config, log *slog.Logger) (*ratelimit.Server, error) {
	if cfg.RateLimit.GRPC.String() == "" {
		return nil, nil
	}
	return ratelimit.New(cfg, ratelimit.Options{Logger: log})
}

// startRateLimit starts the global rate-limit service in g when the config
// sets ratelimit.grpc, and returns it as the updaters to follow config
// changes (none when it is not configured).
func startRateLimit(ctx context.Context, g *errgroup.Group, cfg *config.Config, log *slog.Logger) ([]updater, error) {
	s, err := newRateLimit(cfg, log)
	if err != nil || s == nil {
		return nil, err
	}
	g.Go(func() error { return s.Serve(ctx) })
	return []updater{s}, nil
}

// runRateLimit is `kailash ratelimit`: the rate-limit service alone, as any
// number of replicas. On backend redis they share the counters (one quota
// across replicas); on backend memory each replica counts alone. It follows
// config changes (quotas) and drains on SIGTERM as the other servers do.
func runRateLimit(ctx context.Context, args []string, _ io.Writer) error {
	var listen listenFlags
	f, cfg, log, err := loadServerFlags("ratelimit", args, func(fs *flagSetT) { listen.register(fs, "ratelimit") })
	if err != nil {
		return err
	}
	listen.apply(&cfg.RateLimit.GRPC, &cfg.RateLimit.HTTP)
	if cfg.RateLimit.GRPC.String() == "" {
		return fmt.Errorf("%s: ratelimit.grpc: required to run the rate-limit service", f.config)
	}
	s, err := newRateLimit(cfg, log)
	if err != nil {
		return err
	}
	return serveAlone(ctx, log, cfg, s.Serve, func(ctx context.Context) error { return watch(ctx, f.config, log, s) })
}

// listenFlags override a server's listen addresses for this process only
// (-grpc, -http): several replicas of one config on one host. The config
// file is not changed; a reload keeps the addresses this process bound.
type listenFlags struct{ grpc, http string }

func (l *listenFlags) register(fs *flagSetT, section string) {
	fs.StringVar(&l.grpc, "grpc", "", "listen for gRPC here instead of "+section+".grpc (replicas on one host)")
	fs.StringVar(&l.http, "http", "", "serve /metrics, /healthz and /readyz here instead of "+section+".http")
}

func (l *listenFlags) apply(grpc, http *config.HostPort) {
	if l.grpc != "" {
		*grpc = config.HostPortFromText(l.grpc)
	}
	if l.http != "" {
		*http = config.HostPortFromText(l.http)
	}
}
