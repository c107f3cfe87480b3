package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/kailash-gw/kailash/envoy"
	"github.com/kailash-gw/kailash/extauthz"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/workflow"
	"github.com/kailash-gw/kailash/xds"
)

// updater is what a server that follows config changes implements.
type updater interface{ Update(*config.Config) error }

// watch reloads the config file and hands every valid version to each server.
// An invalid file is logged (file, line, what) and the last good config stays.
func watch(ctx context.Context, path string, log *slog.Logger, servers ...updater) error {
	return config.Watch(ctx, path, log, func(c *config.Config) {
		for _, s := range servers {
			if err := s.Update(c); err != nil {
				log.Error("config change not applied; last good config keeps serving", "err", err)
			}
		}
	}, nil)
}

func loadServerFlags(name string, args []string, extra func(*flagSetT)) (*serverFlags, *config.Config, *slog.Logger, error) {
	f := &serverFlags{}
	fs := newFlagSet(name)
	f.register(fs)
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, nil, err
	}
	log, err := f.logger()
	if err != nil {
		return nil, nil, nil, err
	}
	cfg, err := config.Load(f.config)
	if err != nil {
		return nil, nil, nil, err
	}
	return f, cfg, log, nil
}

func runXDS(ctx context.Context, args []string, _ io.Writer) error {
	f, cfg, log, err := loadServerFlags("xds", args, nil)
	if err != nil {
		return err
	}
	s, err := xds.New(cfg, xds.Options{Logger: log})
	if err != nil {
		return err
	}
	log.Info("xds serving", "grpc", s.GRPCAddr(), "http", s.HTTPAddr())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.Serve(gctx) })
	g.Go(func() error { return watch(gctx, f.config, log, s) })
	return g.Wait()
}

func runAuthz(ctx context.Context, args []string, _ io.Writer) error {
	var drop dropInFlags
	f, cfg, log, err := loadAuthzFlags(args, &drop)
	if err != nil {
		return err
	}
	gogc := extauthz.TuneGC()
	s, err := extauthz.New(ctx, cfg, extauthz.Options{Logger: log, DropIn: drop.enabled()})
	if err != nil {
		return err
	}
	log.Info("authz serving", "grpc", s.GRPCAddr(), "http", s.HTTPAddr(), "drop_in", drop.enabled(), "policy", s.Engine().Source(), "decision", s.Engine().Decision(), "gogc", gogc)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.Serve(gctx) })
	if !drop.enabled() {
		g.Go(func() error { return watch(gctx, f.config, log, s) })
	}
	return g.Wait()
}

func runRunner(ctx context.Context, args []string, _ io.Writer) error {
	_, cfg, log, err := loadServerFlags("runner", args, nil)
	if err != nil {
		return err
	}
	s, err := workflow.New(cfg, workflow.Options{Logger: log})
	if err != nil {
		return err
	}
	log.Info("runner serving", "http", s.Addr())
	return s.Serve(ctx)
}

// runUp runs the control plane, authz and runner in this process and Envoy as
// a child. Ctrl-C (or SIGTERM) stops all of it, Envoy included.
func runUp(ctx context.Context, args []string, stdout io.Writer) error {
	var envoyBin, devKey, envoyLog string
	f, cfg, log, err := loadServerFlags("up", args, func(fs *flagSetT) {
		fs.StringVar(&envoyBin, "envoy", "", "Envoy binary (default: $ENVOY_BIN, envoy on PATH, or bin/envoy)")
		fs.StringVar(&devKey, "dev-key", "", "development signing key for the sample token (default: keys/dev-signing-key.pem beside the config)")
		fs.StringVar(&envoyLog, "envoy-log-level", "warning", "Envoy's log level")
	})
	if err != nil {
		return err
	}
	if envoyBin == "" {
		if envoyBin, err = envoy.FindBinary(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	xs, err := xds.New(cfg, xds.Options{Logger: log.With("part", "xds")})
	if err != nil {
		return err
	}
	as, err := extauthz.New(ctx, cfg, extauthz.Options{Logger: log.With("part", "authz")})
	if err != nil {
		return err
	}
	rs, err := workflow.New(cfg, workflow.Options{Logger: log.With("part", "runner")})
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return xs.Serve(gctx) })
	g.Go(func() error { return as.Serve(gctx) })
	g.Go(func() error { return rs.Serve(gctx) })
	rls, err := startRateLimit(gctx, g, cfg, log.With("part", "ratelimit"))
	if err != nil {
		cancel()
		_ = g.Wait()
		return err
	}
	g.Go(func() error { return watch(gctx, f.config, log, append([]updater{xs, as}, rls...)...) })

	boot, err := envoy.Bootstrap(cfg)
	if err != nil {
		cancel()
		_ = g.Wait()
		return err
	}
	proc, err := envoy.Start(gctx, envoy.Options{Binary: envoyBin, Bootstrap: boot, Log: os.Stderr, LogLevel: envoyLog})
	if err != nil {
		cancel()
		_ = g.Wait()
		return err
	}
	g.Go(func() error {
		<-proc.Done()
		if gctx.Err() == nil {
			return fmt.Errorf("envoy exited unexpectedly: %v", proc.Wait())
		}
		return nil
	})
	g.Go(func() error {
		rctx, rcancel := context.WithTimeout(gctx, 60*time.Second)
		defer rcancel()
		if err := proc.WaitReady(rctx); err != nil {
			if gctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := waitListener(rctx, cfg.Envoy.Listen); err != nil {
			if gctx.Err() != nil {
				return nil
			}
			return err
		}
		admin, _ := proc.AdminAddr(rctx)
		printBanner(stdout, cfg, admin, devKey)
		return nil
	})
	err = g.Wait()
	<-proc.Done() // never return with Envoy still running
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// waitListener polls the Envoy listener until it accepts HTTP.
func waitListener(ctx context.Context, addr string) error {
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("envoy listener %s not serving: %w", addr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func printBanner(w io.Writer, cfg *config.Config, admin, devKey string) {
	t := cfg.Tenants[0]
	fmt.Fprintf(w, "\nKailash Gateway is up: Envoy %s serves http://%s (admin http://%s)\n", envoy.Version, cfg.Envoy.Listen, admin)
	var ts []string
	for _, t := range cfg.Tenants {
		ts = append(ts, fmt.Sprintf("%s (%s)", t.ID, strings.Join(t.Domains, ", ")))
	}
	fmt.Fprintf(w, "Tenants: %s\n", strings.Join(ts, "; "))
	if devKey == "" {
		devKey = cfg.Path("keys/dev-signing-key.pem")
	}
	tok, err := mintFromFile(devKey, devtoken.Claims{
		Issuer: t.JWT.Issuer, Audience: t.JWT.Audiences[:min(1, len(t.JWT.Audiences))], Tenant: t.ID,
		Subject: "alice", Roles: []string{"admin"}, TTL: 8 * time.Hour,
	})
	if err != nil {
		fmt.Fprintf(w, "No development token (%v); mint one with `kailash token --tenant %s --sub alice --roles admin`.\n", err, t.ID)
		return
	}
	fmt.Fprintf(w, "\nTry it, as alice (role admin) of tenant %s, with a development token valid 8h:\n\n", t.ID)
	fmt.Fprintf(w, "curl -sS -H 'Host: %s' -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' -d '{\"order\": 42}' http://%s/v1/workflows/hello/executions\n\n",
		t.Domains[0], tok, cfg.Envoy.Listen)
	if cfg.TLS.Listen != "" && t.TLS.CertFile != "" {
		_, port, _ := config.SplitHostPort(cfg.TLS.Listen)
		host, _, _ := config.SplitHostPort(cfg.TLS.Listen)
		fmt.Fprintf(w, "Over HTTPS (TLS 1.3, the tenant's certificate picked by SNI; development CA):\n\n")
		fmt.Fprintf(w, "curl -sS --cacert %s --resolve %s:%d:%s -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' -d '{\"order\": 42}' https://%s:%d/v1/workflows/hello/executions\n\n",
			cfg.Path("keys/dev-tls-ca.pem"), t.Domains[0], port, host, tok, t.Domains[0], port)
	}
	fmt.Fprintln(w, "Press Ctrl-C to stop everything (Envoy included).")
}
