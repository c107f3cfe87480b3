package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/kailash-gw/kailash/envoy"
	"github.com/kailash-gw/kailash/extauthz"
	"github.com/kailash-gw/kailash/extauthz/ratelimit"
	"github.com/kailash-gw/kailash/internal/audit"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/telemetry"
	"github.com/kailash-gw/kailash/internal/tenantstore"
	"github.com/kailash-gw/kailash/workflow/api"
	"github.com/kailash-gw/kailash/xds"
)

// updater is a server that follows config changes: Prepare builds a
// revision without changing what is served and returns the commit that puts
// it in force (config.Component).
type updater interface {
	Prepare(*config.Config) (commit func(), err error)
}

// watch reloads the config file and applies each revision to every server
// or to none: each one prepares it, and only if all succeeded do all commit.
// A file that does not load, or that any server refuses, is logged once
// (file, server, what) and counted in every server's
// kailash_<server>_config_rejected_total: the last good config keeps
// serving everywhere. Each server's /metrics carries kailash_config_revision.
func watch(ctx context.Context, path string, log *slog.Logger, servers ...updater) error {
	return watchAudited(ctx, path, log, nil, "", nil, servers...)
}

// watchAudited is watch that records each revision (and tenant change) put
// in force, or refused, as an audit event of component; initial is the
// config in force now.
func watchAudited(ctx context.Context, path string, log *slog.Logger, aud *audit.Logger, component string, initial *config.Config, servers ...updater) error {
	return watchTenants(ctx, path, log, aud, component, initial, nil, servers...)
}

// watchTenants is watchAudited with a tenant store: each file revision is
// combined with the store's tenants before the servers get it, and each
// store change is combined with the newest file (src nil: the file alone).
func watchTenants(ctx context.Context, path string, log *slog.Logger, aud *audit.Logger, component string, initial *config.Config, src *tenantstore.Source, servers ...updater) error {
	prev, next := initial, (*config.Config)(nil)
	parts := make([]config.Part, 0, len(servers))
	var rejected []func()
	var revs []*telemetry.ConfigMetrics
	var reloaded []func(error) // each server's /debug/status reloader of the config file
	for _, s := range servers {
		if r, ok := s.(interface{ ConfigReloaded(error) }); ok {
			reloaded = append(reloaded, r.ConfigReloaded)
		}
		name := partName(s)
		parts = append(parts, config.Part{Name: name, Component: s})
		rejected = append(rejected, rejectCounter(name, s))
		if r, ok := s.(interface{ Registry() *prometheus.Registry }); ok {
			m, err := telemetry.NewConfigMetrics(r.Registry())
			if err != nil {
				log.Warn("config revision metrics not registered", "server", name, "err", err)
				continue
			}
			revs = append(revs, m)
		}
	}
	apply := func(c *config.Config) error { return config.Apply(c, parts...) }
	if src != nil {
		src.Start(apply)
		apply = src.SetFile
	}
	return config.Watch(ctx, path, log, config.Watcher{
		Apply: func(c *config.Config) error {
			err := apply(c)
			if err == nil {
				next = c
			}
			return err
		},
		Applied: func(r config.Revision) {
			if aud != nil && prev != nil && next != nil {
				auditReload(ctx, aud, component, path, prev, next, r.Digest)
			}
			prev = next
			for _, m := range revs {
				m.Applied(r.Seq, r.At)
			}
			for _, f := range reloaded {
				f(nil)
			}
		},
		Rejected: func(err error) {
			aud.Record(ctx, audit.Event{Component: component, Action: audit.ConfigReject, Actor: fileActor(path), Target: path,
				Outcome: audit.Error, Error: err.Error()})
			for _, inc := range rejected {
				inc()
			}
			for _, f := range reloaded {
				f(err)
			}
		},
	})
}

// partName names a server in config errors and metrics.
func partName(s updater) string {
	switch s.(type) {
	case *xds.Server:
		return "xds"
	case *extauthz.Server:
		return "authz"
	case *api.Server:
		return "runner"
	case *ratelimit.Server:
		return "ratelimit"
	}
	return fmt.Sprintf("%T", s)
}

// rejectCounter is what counts a rejected revision for s: its own counter
// when it has one, else kailash_<name>_config_rejected_total registered in
// its registry.
func rejectCounter(name string, s updater) func() {
	if c, ok := s.(interface{ ConfigRejected() }); ok {
		return c.ConfigRejected
	}
	r, ok := s.(interface{ Registry() *prometheus.Registry })
	if !ok {
		return func() {}
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kailash_" + name + "_config_rejected_total",
		Help: "Config revisions not applied (refused by this or another component, or not loadable); the last good config kept serving.",
	})
	if err := r.Registry().Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return func() {}
		}
		c = are.ExistingCollector.(prometheus.Counter)
	}
	return c.Inc
}

// drainAlone is how one server run alone (kailash xds|authz|runner) stops
// on SIGTERM/Ctrl-C: /readyz answers 503 at once, new work keeps being
// accepted for shutdown.pre_stop_delay (load balancers stop sending), then
// the caller stops the server, which lets in-flight requests finish
// (bounded by shutdown.drain_timeout for HTTP). A second signal ends the
// delay at once.
func drainAlone(log *slog.Logger, cfg *config.Config) {
	telemetry.SetDraining(true)
	log.Info("shutting down: not ready any more", "pre_stop_delay", cfg.Shutdown.PreStopDelay, "drain_timeout", cfg.Shutdown.DrainTimeout)
	if cfg.Shutdown.PreStopDelay <= 0 {
		return
	}
	hard, stop := secondSignal()
	defer stop()
	select {
	case <-time.After(cfg.Shutdown.PreStopDelay):
	case <-hard:
		log.Warn("second signal: stopping at once")
		telemetry.SetShutdownGrace(time.Millisecond)
	}
}

// secondSignal reports a SIGINT or SIGTERM received from now on (the first
// one already ended the run's context).
func secondSignal() (<-chan os.Signal, func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	return ch, func() { signal.Stop(ch) }
}

// serveAlone runs serve (and the config watch, when given) until ctx ends
// (a signal) or one of them fails; on a signal it drains first
// (drainAlone), then stops them and waits for them.
func serveAlone(ctx context.Context, log *slog.Logger, cfg *config.Config, serve func(context.Context) error, follow func(context.Context) error) error {
	telemetry.SetShutdownGrace(cfg.Shutdown.DrainTimeout)
	defer telemetry.SetDraining(false) // the process is exiting; tests run several
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	g, gctx := errgroup.WithContext(sctx)
	g.Go(func() error { return serve(gctx) })
	if follow != nil {
		g.Go(func() error { return follow(gctx) })
	}
	select {
	case <-ctx.Done():
		drainAlone(log, cfg)
	case <-gctx.Done():
	}
	stop()
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
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
	var listen listenFlags
	f, cfg, log, err := loadServerFlags("xds", args, func(fs *flagSetT) { listen.register(fs, "xds") })
	if err != nil {
		return err
	}
	listen.apply(&cfg.XDS.GRPC, &cfg.XDS.HTTP)
	ts, first, err := openTenantStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer ts.Close()
	s, err := xds.New(first, xds.Options{Logger: log})
	if err != nil {
		return err
	}
	ts.register(s)
	aud, err := serverAudit(cfg, log, s)
	if err != nil {
		return err
	}
	defer aud.Close()
	log.Info("xds serving", "grpc", s.GRPCAddr(), "http", s.HTTPAddr())
	return serveAlone(ctx, log, cfg, s.Serve, func(ctx context.Context) error {
		return watchTenants(ctx, f.config, log, aud, "xds", cfg, ts.source(), s)
	})
}

func runAuthz(ctx context.Context, args []string, _ io.Writer) error {
	var drop dropInFlags
	var listen listenFlags
	f, cfg, log, err := loadAuthzFlags(args, &drop, &listen)
	if err != nil {
		return err
	}
	gogc := extauthz.TuneGC()
	tr := newTracers(cfg, log)
	defer tr.shutdown(log)
	tp, err := tr.provider("authz")
	if err != nil {
		return err
	}
	var aud *audit.Logger
	if !drop.enabled() {
		if aud, err = newAuditLogger(cfg, log, nil); err != nil {
			return err
		}
		defer aud.Close()
	}
	var ts *tenantStore
	first := cfg
	if !drop.enabled() {
		if ts, first, err = openTenantStore(ctx, cfg, log); err != nil {
			return err
		}
		defer ts.Close()
	}
	s, err := extauthz.New(ctx, first, extauthz.Options{Logger: log, DropIn: drop.enabled(), EnableReflection: drop.reflection, TracerProvider: tp, Audit: aud,
		BundleHTTPClient: drop.bundleClient, DecisionLogHTTPClient: drop.logClient, Verification: drop.verify, DecisionLogLabels: drop.labels, Status: drop.status})
	if err != nil {
		return err
	}
	if err := aud.Register(s.Registry()); err != nil {
		return err
	}
	ts.register(s)
	ts.serveAdmin(s, cfg, aud, log)
	serveAPIKeys(s, cfg, aud, log)
	log.Info("authz serving", "grpc", s.GRPCAddr(), "http", s.HTTPAddr(), "drop_in", drop.enabled(), "policy", s.Engine().Source(), "decision", s.Engine().Decision(), "gogc", gogc)
	var follow func(context.Context) error
	if !drop.enabled() {
		follow = func(ctx context.Context) error {
			return watchTenants(ctx, f.config, log, aud, "authz", cfg, ts.source(), s)
		}
	}
	return serveAlone(ctx, log, cfg, s.Serve, follow)
}

func runRunner(ctx context.Context, args []string, _ io.Writer) error {
	var listen listenFlags
	f, cfg, log, err := loadServerFlags("runner", args, func(fs *flagSetT) { listen.registerHTTP(fs, "runner") })
	if err != nil {
		return err
	}
	listen.apply(nil, &cfg.Runner.HTTP)
	tr := newTracers(cfg, log)
	defer tr.shutdown(log)
	tp, err := tr.provider("runner")
	if err != nil {
		return err
	}
	s, err := api.New(cfg, api.Options{Logger: log, TracerProvider: tp})
	if err != nil {
		return err
	}
	aud, err := serverAudit(cfg, log, s)
	if err != nil {
		return err
	}
	defer aud.Close()
	log.Info("runner serving", "http", s.Addr())
	return serveAlone(ctx, log, cfg, s.Serve, func(ctx context.Context) error {
		return watchAudited(ctx, f.config, log, aud, "runner", cfg, s)
	})
}

// runUp runs the control plane, authz and runner in this process and Envoy as
// a child. Ctrl-C (or SIGTERM) stops all of it, Envoy included, without
// cutting requests in flight (see shutdownUp); a second one stops at once.
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
	telemetry.SetShutdownGrace(cfg.Shutdown.DrainTimeout)
	defer telemetry.SetDraining(false) // the process is exiting; tests run several
	// The servers outlive the signal: Envoy's requests in flight still need
	// authz and the runner while it drains.
	sctx, stopServers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServers()

	tr := newTracers(cfg, log)
	defer tr.shutdown(log) // after the servers stopped: their last spans are flushed
	var tps [3]trace.TracerProvider
	for i, c := range []string{"authz", "runner", "ratelimit"} {
		if tps[i], err = tr.provider(c); err != nil {
			return err
		}
	}
	ts, first, err := openTenantStore(sctx, cfg, log)
	if err != nil {
		return err
	}
	defer ts.Close()
	xs, err := xds.New(first, xds.Options{Logger: log.With("part", "xds")})
	if err != nil {
		return err
	}
	rl, err := newRateLimit(first, log.With("part", "ratelimit"), tps[2])
	if err != nil {
		_ = xs.Close()
		return err
	}
	aud, err := newAuditLogger(cfg, log, nil)
	if err != nil {
		_ = xs.Close()
		return err
	}
	defer aud.Close()
	aopts := extauthz.Options{Logger: log.With("part", "authz"), TracerProvider: tps[0], Audit: aud}
	if rl != nil {
		aopts.RateLimitExplain = rl.Explain // kailash explain's rate-limit step, in process
	}
	as, err := extauthz.New(sctx, first, aopts)
	if err != nil {
		_ = xs.Close()
		if rl != nil {
			_ = rl.Close()
		}
		return err
	}
	rs, err := api.New(cfg, api.Options{Logger: log.With("part", "runner"), TracerProvider: tps[1]})
	if err != nil {
		_ = xs.Close()
		_ = as.Close()
		if rl != nil {
			_ = rl.Close()
		}
		return err
	}
	ts.register(xs, as)
	ts.serveAdmin(as, cfg, aud, log.With("part", "authz")) // before Serve builds the mux
	serveAPIKeys(as, cfg, aud, log.With("part", "authz"))
	g, gctx := errgroup.WithContext(sctx)
	g.Go(func() error { return xs.Serve(gctx) })
	g.Go(func() error { return as.Serve(gctx) })
	g.Go(func() error { return rs.Serve(gctx) })
	updaters := []updater{xs, as, rs}
	if rl != nil {
		g.Go(func() error { return rl.Serve(gctx) })
		updaters = append(updaters, rl)
	}
	if err := aud.Register(as.Registry()); err != nil {
		log.Warn("audit metrics not registered", "err", err)
	}
	g.Go(func() error { return watchTenants(gctx, f.config, log, aud, "up", cfg, ts.source(), updaters...) })

	boot, err := envoy.Bootstrap(cfg)
	if err != nil {
		stopServers()
		_ = g.Wait()
		return err
	}
	proc, err := envoy.Start(gctx, envoy.Options{Binary: envoyBin, Bootstrap: boot, Log: os.Stderr, LogLevel: envoyLog,
		DrainTime: cfg.Shutdown.DrainTimeout})
	if err != nil {
		stopServers()
		_ = g.Wait()
		return err
	}
	var stopping atomic.Bool
	g.Go(func() error {
		<-proc.Done()
		if !stopping.Load() && gctx.Err() == nil {
			return fmt.Errorf("envoy exited unexpectedly: %v", proc.Wait())
		}
		return nil
	})
	g.Go(func() error {
		rctx, rcancel := context.WithTimeout(gctx, 60*time.Second)
		defer rcancel()
		if err := proc.WaitReady(rctx); err != nil {
			if gctx.Err() != nil || stopping.Load() {
				return nil
			}
			return err
		}
		if err := waitListenerProxy(rctx, cfg.Envoy.Listen.String(), cfg.Envoy.Listener.ProxyProtocol != nil && *cfg.Envoy.Listener.ProxyProtocol); err != nil {
			if gctx.Err() != nil || stopping.Load() {
				return nil
			}
			return err
		}
		admin, _ := proc.AdminAddr(rctx)
		printBanner(stdout, cfg, admin, devKey)
		return nil
	})
	select {
	case <-ctx.Done():
		stopping.Store(true)
		shutdownUp(log, cfg, proc)
	case <-gctx.Done(): // a server or Envoy failed: no draining
		stopping.Store(true)
		proc.StopWithin(5 * time.Second)
	}
	stopServers()
	err = g.Wait()
	<-proc.Done() // never return with Envoy still running
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	log.Info("stopped")
	return err
}

// shutdownUp drains Envoy and stops it: every /readyz answers 503 and
// Envoy's health check fails at once; Envoy keeps accepting for
// shutdown.pre_stop_delay, then stops accepting (new connections are
// refused) and its requests in flight finish, for at most
// shutdown.drain_timeout; then Envoy gets SIGTERM (SIGKILL after 5s). A
// second SIGINT/SIGTERM ends the wait at once. The servers are stopped by
// the caller, after Envoy.
func shutdownUp(log *slog.Logger, cfg *config.Config, proc *envoy.Process) {
	telemetry.SetDraining(true)
	start := time.Now()
	log.Info("shutting down: draining Envoy", "pre_stop_delay", cfg.Shutdown.PreStopDelay, "drain_timeout", cfg.Shutdown.DrainTimeout)
	hard, stopHard := secondSignal()
	defer stopHard()
	dctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-hard:
			log.Warn("second signal: stopping at once")
			telemetry.SetShutdownGrace(time.Millisecond)
			cancel()
		case <-dctx.Done():
		}
	}()
	if err := proc.Drain(dctx, envoy.DrainOptions{PreStop: cfg.Shutdown.PreStopDelay, Timeout: cfg.Shutdown.DrainTimeout}); err != nil {
		log.Warn("Envoy not drained; stopping it with what is left in flight", "err", err, "after", time.Since(start).Round(time.Millisecond))
	} else {
		log.Info("Envoy drained: no request in flight", "after", time.Since(start).Round(time.Millisecond))
	}
	grace := 5 * time.Second
	if dctx.Err() != nil {
		grace = 0
	}
	proc.StopWithin(grace)
}

// waitListener polls the Envoy listener until it accepts HTTP.
func waitListener(ctx context.Context, addr string) error {
	return waitListenerProxy(ctx, addr, false)
}

// waitListenerProxy is waitListener for a listener that requires the PROXY
// protocol when proxied: each probe starts with "PROXY UNKNOWN" (v1: Envoy
// keeps the connection's own addresses).
func waitListenerProxy(ctx context.Context, addr string, proxied bool) error {
	client := &http.Client{Timeout: time.Second}
	if proxied {
		client.Transport = &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, a)
			if err == nil {
				if _, err = io.WriteString(c, "PROXY UNKNOWN\r\n"); err != nil {
					c.Close()
				}
			}
			return c, err
		}}
	}
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
	if cfg.TLS.Listen.String() != "" && t.TLS.CertFile != "" {
		_, port, _ := config.SplitHostPort(cfg.TLS.Listen.String())
		host, _, _ := config.SplitHostPort(cfg.TLS.Listen.String())
		fmt.Fprintf(w, "Over HTTPS (TLS 1.3, the tenant's certificate picked by SNI; development CA):\n\n")
		fmt.Fprintf(w, "curl -sS --cacert %s --resolve %s:%d:%s -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' -d '{\"order\": 42}' https://%s:%d/v1/workflows/hello/executions\n\n",
			cfg.Path("keys/dev-tls-ca.pem"), t.Domains[0], port, host, tok, t.Domains[0], port)
	}
	fmt.Fprintln(w, "Press Ctrl-C to stop everything (Envoy included).")
}
