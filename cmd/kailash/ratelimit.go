package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/kailash-gw/kailash/extauthz/ratelimit"
	"github.com/kailash-gw/kailash/internal/config"
)

// newRateLimit builds the global rate-limit service of cfg's ratelimit
// section (backend, fail mode, quotas, addresses): the one construction
// `kailash up` (in process) and `kailash ratelimit` (alone) share. It is
// nil, with no error, when the config sets no ratelimit.grpc.
func newRateLimit(cfg *config.Config, log *slog.Logger, tp trace.TracerProvider) (*ratelimit.Server, error) {
	if cfg.RateLimit.GRPC.String() == "" {
		return nil, nil
	}
	return ratelimit.New(cfg, ratelimit.Options{Logger: log, TracerProvider: tp})
}

// runRateLimit is `kailash ratelimit`: the rate-limit service alone, as any
// number of replicas. On backend redis they share the counters (one quota
// across replicas); on backend memory each replica counts alone. It follows
// config changes (quotas, and the --rls-config files) and drains on SIGTERM
// as the other servers do. With --rls-config and no -c it needs no
// kailash.yaml: addresses and Redis come from flags and envoyproxy/ratelimit's
// environment variables (rlsStandaloneConfig).
func runRateLimit(ctx context.Context, args []string, _ io.Writer) error {
	var (
		listen listenFlags
		rf     rlsFlags
		f      serverFlags
	)
	fs := newFlagSet("ratelimit")
	f.register(fs)
	listen.register(fs, "ratelimit")
	rf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("ratelimit: unexpected argument %q", fs.Arg(0))
	}
	log, err := f.logger()
	if err != nil {
		return err
	}
	withFile := rf.path == "" || flagSet(fs, "c", "config")
	var cfg *config.Config
	if withFile {
		if cfg, err = config.Load(f.config); err != nil && looksLikeRLSConfig(f.config) {
			return fmt.Errorf("%w\n%s looks like an envoyproxy/ratelimit config (domain, descriptors): pass it with --rls-config %s", err, f.config, f.config)
		}
	} else {
		cfg, err = rlsStandaloneConfig(&rf, os.Getenv)
		if err == nil && cfg.RateLimit.Backend != config.BackendRedis {
			log.Warn("no REDIS_URL or --redis: counters are in this process's memory; replicas do not share them")
		}
	}
	if err != nil {
		return err
	}
	listen.apply(&cfg.RateLimit.GRPC, &cfg.RateLimit.HTTP)
	if cfg.RateLimit.GRPC.String() == "" {
		return fmt.Errorf("%s: ratelimit.grpc: required to run the rate-limit service", f.config)
	}
	tr := newTracers(cfg, log)
	defer tr.shutdown(log)
	tp, err := tr.provider("ratelimit")
	if err != nil {
		return err
	}
	opts := ratelimit.Options{Logger: log, TracerProvider: tp, RLSResponseHeaders: rf.headers || envTrue(os.Getenv("LIMIT_RESPONSE_HEADERS_ENABLED"))}
	if rf.path != "" {
		if opts.RLSConfig, err = ratelimit.LoadRLSConfig(rf.path); err != nil {
			return err
		}
		log.Info("envoyproxy/ratelimit config loaded", "path", rf.path, "files", len(opts.RLSConfig.Files()), "limits", opts.RLSConfig.Len())
	}
	// Stored tenants' quotas count as the file's (tenant_store).
	var ts *tenantStore
	first := cfg
	if withFile {
		if ts, first, err = openTenantStore(ctx, cfg, log); err != nil {
			return err
		}
		defer ts.Close()
	}
	s, err := ratelimit.New(first, opts)
	if err != nil {
		return err
	}
	ts.register(s)
	aud, err := serverAudit(cfg, log, s)
	if err != nil {
		return err
	}
	defer aud.Close()
	follow := func(ctx context.Context) error {
		g, gctx := errgroup.WithContext(ctx)
		if withFile {
			g.Go(func() error { return watchTenants(gctx, f.config, log, aud, "ratelimit", cfg, ts.source(), s) })
		}
		if rf.path != "" {
			g.Go(func() error { return watchRLS(gctx, rf.path, log, s) })
		}
		return g.Wait()
	}
	return serveAlone(ctx, log, cfg, s.Serve, follow)
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
