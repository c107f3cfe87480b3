package extauthz

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/uuid"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/kailash-gw/kailash/extauthz/apikey"
	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/extauthz/explain"
	"github.com/kailash-gw/kailash/extauthz/jwtauth"
	"github.com/kailash-gw/kailash/extauthz/login"
	"github.com/kailash-gw/kailash/extauthz/oidc"
	"github.com/kailash-gw/kailash/internal/audit"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/mtls"
	"github.com/kailash-gw/kailash/internal/telemetry"
	"github.com/kailash-gw/kailash/internal/wire"
	"github.com/kailash-gw/kailash/policies"
)

// Options are the server's injected dependencies.
type Options struct {
	Logger *slog.Logger     // default: discard
	Now    func() time.Time // clock for token validation (default time.Now)
	// TokenCacheSize bounds each tenant's verified-token cache
	// (0 = 4096 entries; negative disables the cache).
	TokenCacheSize int
	// DropIn runs as a replacement for opa-envoy-plugin: no tenant or
	// identity is required or looked up, the input has no identity and no
	// tenant, and results map exactly as opa-envoy-plugin maps them.
	DropIn bool
	// DecisionLogOutput is where decision_logs.console writes (default
	// os.Stdout).
	DecisionLogOutput io.Writer
	// EnableReflection registers gRPC server reflection on the Check port
	// (opa-envoy-plugin's enable-reflection).
	EnableReflection bool
	// TracerProvider makes each Check (and login request) a span joined to
	// Envoy's trace; nil is tracing off, at no cost per Check.
	TracerProvider trace.TracerProvider
	// RateLimitExplain finds what the rate-limit service counted for a
	// decision (in process); nil asks ratelimit.http when it is set.
	RateLimitExplain RateLimitExplainer
	// Audit records policy bundle activations, signing key rotations and
	// session revocations; nil records none.
	Audit *audit.Logger
	// BundleHTTPClient fetches policy.bundle_url, and DecisionLogHTTPClient
	// uploads decision logs (credentials and TLS of OPA's config-file
	// services); nil: plain clients. Verification, when set, is the bundle
	// signature check (OPA's keys) instead of policy.signing's file.
	// DecisionLogLabels are the decision log entries' labels (OPA's).
	BundleHTTPClient, DecisionLogHTTPClient *http.Client
	Verification                            *policies.Verification
	DecisionLogLabels                       map[string]string
	// Status, when set, runs OPA's status plugin (opastatus.go).
	Status *StatusOptions
}

// reasonKeysUnavailable: no key set to verify the token with (503).
const reasonKeysUnavailable = "keys_unavailable"

// Results of a Check, the "result" label of kailash_authz_checks_total.
const (
	ResultAllow           = "allow"
	ResultDeny            = "deny"
	ResultUnauthenticated = "unauthenticated"
	ResultError           = "error"
)

// Server is the envoy.service.auth.v3.Authorization server.
type Server struct {
	authv3.UnimplementedAuthorizationServer

	log        *slog.Logger
	now        func() time.Time
	cacheSize  int
	engine     *policies.Engine
	shadow     *policies.Engine // candidate bundle evaluated next to engine; may be nil
	dlog       *policies.DecisionLogger
	dropIn     bool
	reflection bool
	tp         trace.TracerProvider // nil: tracing off
	explain    *explain.Store       // recent refusals (nil: authz.explain.records 0)
	explainCap int
	rlExplain  RateLimitExplainer
	rlHTTP     string // ratelimit.http, asked for rate-limit steps
	audit      *audit.Logger
	status     *StatusOptions
	// authz.api_keys_file: the tenants' API keys (apikeys.go); nil when unset.
	apiKeys        *apikey.Store
	apiKeysFile    string
	apiKeysRedis   *apikey.Redis // authz.api_keys_in_redis
	apiKeysMu      sync.Mutex    // serializes loadAPIKeys and writes through APIKeys; guards apiKeysVersion
	apiKeysVersion int64         // of the keys in force (Redis)
	keysWatch      keysFileWatch // the keys file as last read (apiKeysMu)
	tracer         trace.Tracer  // from tp; nil when off
	inputOpts      envoyauth.InputOptions
	auth           *login.Service           // logins, our session tokens, the identity token; nil in drop-in mode
	ready          *telemetry.Readiness     // /readyz (readiness.go)
	snap           atomic.Pointer[snapshot] // the tenants in force; replaced whole by Update

	bg     context.Context // background work (JWKS refresh); ends with Serve or Close
	stopBG context.CancelFunc

	issuers  issuerRegistry // tenants' key sources: jwt.jwks_url and issuers[] (issuers.go)
	reloaded reloaders      // what each reloader last did, for /debug/status (status.go)

	grpcLn, httpLn net.Listener
	closeOnce      sync.Once
	tls            *mtls.Server // authz.tls: mutual TLS on the gRPC port; nil is plaintext

	reg      *prometheus.Registry
	checks   *prometheus.CounterVec
	duration prometheus.Histogram
	rejected prometheus.Counter
	reloads  *prometheus.CounterVec
	shadows  *prometheus.CounterVec

	cacheHits, cacheMisses prometheus.Counter
	cacheBypass            *prometheus.CounterVec

	// routes are more HTTP routes (RouteHTTP), added to the mux by Serve.
	routes []func(*http.ServeMux)

	// checksAllow and checksDeny are checks bound to the two commonest
	// label pairs (see countCheck).
	checksAllow, checksDeny prometheus.Counter
}

// snapshot is one immutable view of the tenants.
type snapshot struct {
	cfg     *config.Config // the config it was built from (status.go)
	timeout time.Duration
	tenants map[string]*tenantState
	issuers map[oidc.Config]*issuerKeys // external issuers' keys (issuers.go)
	hosts   map[string]string           // authz.tenant_from host: domain → tenant (tenant_from.go); nil when off
	domains map[string]string           // exact domain → tenant, for the edge step of explain records
	dryRun  bool                        // policy.dry_run (a tenant's dry_run overrides it)
	// envoy.geo_header: the header (lower case) only geoTrusted peers may
	// send; "" when not configured.
	geoHeader  string
	geoTrusted []netip.Prefix
}

type tenantState struct {
	cfg        config.Tenant
	clientPool *x509.CertPool   // tls.client_ca_file; nil: no client certificates
	term       *ast.Term        // input.tenant, built once
	verifier   identityVerifier // *jwtauth.Verifier, or one per issuer (issuers.go)
}

// New builds the verifiers and the policy engine and binds the listeners
// named by cfg.Authz. ctx bounds background work (JWKS refresh) as well as
// Serve does.
func New(ctx context.Context, cfg *config.Config, opts Options) (*Server, error) {
	if cfg == nil {
		return nil, errors.New("extauthz: nil config")
	}
	s := &Server{log: opts.Logger, now: opts.Now, cacheSize: opts.TokenCacheSize, reg: telemetry.NewRegistry(),
		dropIn: opts.DropIn, reflection: opts.EnableReflection, tp: opts.TracerProvider, audit: opts.Audit, status: opts.Status,
		inputOpts: envoyauth.InputOptions{SkipBodyParse: cfg.Policy.SkipRequestBodyParse, DropIn: opts.DropIn}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.tp != nil {
		s.tracer = s.tp.Tracer("github.com/kailash-gw/kailash/extauthz")
	}
	if cfg.Authz.APIKeysInRedis && !opts.DropIn {
		s.apiKeys = apikey.NewStore() // filled from Redis once the login service has the client
	}
	if f := cfg.Authz.APIKeysFile; f != "" && !opts.DropIn {
		s.apiKeys, s.apiKeysFile = apikey.NewStore(), cfg.Path(f)
		if err := s.loadAPIKeys(); err != nil {
			return nil, fmt.Errorf("authz.api_keys_file: %w", err) // nothing started yet (s.bg is not set)
		}
	}
	if !opts.DropIn {
		s.explainCap = cfg.ExplainRecords()
		s.explain = explain.NewStore(s.explainCap)
		s.rlExplain, s.rlHTTP = opts.RateLimitExplain, cfg.RateLimit.HTTP.String()
	}
	s.bg, s.stopBG = context.WithCancel(ctx)
	s.initMetrics()

	var err error
	fail := func(err error) (*Server, error) {
		s.stopBG()
		return nil, err
	}
	if s.tls, err = mtls.NewServer(cfg, "authz.tls", cfg.Authz.TLS, s.log); err != nil {
		return fail(err)
	}
	eopts, err := EngineOptions(cfg)
	if err != nil {
		return fail(err)
	}
	if opts.BundleHTTPClient != nil {
		eopts.HTTPClient = opts.BundleHTTPClient
	}
	if opts.Verification != nil && eopts.Verify == nil {
		eopts.Verify = opts.Verification
	}
	if s.engine, err = policies.NewEngine(ctx, eopts); err != nil {
		return fail(err)
	}
	if cfg.Policy.Shadow != "" {
		sopts := eopts
		sopts.Dir, sopts.URL = cfg.Path(cfg.Policy.Shadow), ""
		sopts.DecisionCache = 0 // the candidate is evaluated afresh: what it would decide
		if s.shadow, err = policies.NewEngine(ctx, sopts); err != nil {
			return fail(fmt.Errorf("policy.shadow: %w", err))
		}
	}
	if dl := cfg.Policy.DecisionLogs; dl.Enabled() {
		lo := policies.DecisionLogOptions{File: cfg.Path(dl.File), MaxSizeMB: dl.MaxSizeMB, MaxBackups: dl.MaxBackups,
			URL: dl.URL, BatchSize: dl.BatchSize, FlushInterval: dl.FlushInterval, Mask: dl.Mask, Buffer: dl.Buffer,
			HTTPClient: opts.DecisionLogHTTPClient, Labels: opts.DecisionLogLabels}
		if mp := strings.Trim(dl.MaskDecision, "/"); mp != "off" {
			if mp == "" {
				mp = "system/log/mask" // OPA's default
			}
			engine := s.engine
			lo.MaskPolicy = func(ctx context.Context, ev map[string]any) (any, bool, error) {
				v, err := ast.InterfaceToValue(ev)
				if err != nil {
					return nil, true, err
				}
				return engine.EvalAt(ctx, mp, v)
			}
		}
		if dl.Console {
			lo.Console = opts.DecisionLogOutput
			if lo.Console == nil {
				lo.Console = os.Stdout
			}
		}
		if s.dlog, err = policies.NewDecisionLogger(lo); err != nil {
			return fail(err)
		}
		s.reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kailash_decision_logs_written_total", Help: "Decision log events written."},
				func() float64 { n, _, _ := s.dlog.Stats(); return float64(n) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kailash_decision_logs_dropped_total", Help: "Decision log events dropped because the buffer was full (a Check never waits for logging)."},
				func() float64 { _, n, _ := s.dlog.Stats(); return float64(n) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kailash_decision_logs_failed_total", Help: "Decision log events a sink failed to take."},
				func() float64 { _, _, n := s.dlog.Stats(); return float64(n) }),
		)
	}
	snap, err := s.build(cfg)
	if err != nil {
		return fail(err)
	}
	s.initReloaders()
	s.snap.Store(snap)
	s.startIssuers(snap)
	if !opts.DropIn {
		if s.auth, err = login.New(cfg, login.Options{Logger: s.log, Now: s.now, Registerer: s.reg, Audit: opts.Audit, ServiceAccounts: s.serviceAccounts()}); err != nil {
			return fail(err)
		}
		if c := s.auth.RedisClient(); c != nil && cfg.Authz.APIKeysInRedis {
			s.apiKeysRedis = apikey.NewRedis(c, "")
			if err := s.loadAPIKeys(); err != nil {
				return fail(fmt.Errorf("authz.api_keys_in_redis: %w", err))
			}
		}
		if c := s.auth.RedisClient(); c != nil && s.explain.Enabled() {
			s.explain.SetShared(explain.NewShared(s.bg, c, cfg.ExplainTTL())) // every replica answers explain for every request
		}
	}
	s.ready = s.readiness()
	s.reg.MustRegister(s.ready, policyCollector{s})
	if s.tls != nil {
		s.reg.MustRegister(s.tls.Collector())
	}

	var lc net.ListenConfig
	if s.grpcLn, err = lc.Listen(ctx, "tcp", cfg.Authz.GRPC.String()); err != nil {
		s.stopBG()
		return nil, fmt.Errorf("authz.grpc: %w", err)
	}
	if cfg.Authz.HTTP.String() != "" {
		if s.httpLn, err = lc.Listen(ctx, "tcp", cfg.Authz.HTTP.String()); err != nil {
			s.grpcLn.Close()
			s.stopBG()
			return nil, fmt.Errorf("authz.http: %w", err)
		}
	}
	return s, nil
}

func (s *Server) initMetrics() {
	s.checks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kailash_authz_checks_total",
		Help: "Check decisions by result (allow, deny, unauthenticated, error) and reason code.",
	}, []string{"result", "reason"})
	s.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "kailash_authz_check_duration_seconds",
		Help:    "Time to answer a Check.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5},
	})
	s.rejected = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kailash_authz_config_rejected_total",
		Help: "Config updates rejected (the last good config kept serving).",
	})
	s.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kailash_authz_policy_reloads_total",
		Help: "Policy bundle reloads by bundle (active, shadow) and result (ok, error); a failed one keeps the last good bundle.",
	}, []string{"bundle", "result"})
	s.shadows = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kailash_policy_shadow_evaluations_total",
		Help: "Shadow (candidate bundle) evaluations by agreement with the active bundle (agree, disagree).",
	}, []string{"agreement"})
	s.checksAllow = s.checks.WithLabelValues(ResultAllow, "policy")
	s.checksDeny = s.checks.WithLabelValues(ResultDeny, "policy")
	s.cacheHits = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kailash_policy_decision_cache_hits_total",
		Help: "Policy decisions answered from the decision cache.",
	})
	s.cacheMisses = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kailash_policy_decision_cache_misses_total",
		Help: "Policy decisions evaluated because the decision cache had no valid entry (then stored).",
	})
	s.cacheBypass = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kailash_policy_decision_cache_bypass_total",
		Help: "Policy decisions evaluated without the decision cache, by reason (disabled, input_whole, input_dynamic, nondeterministic:<builtin>, unbounded_time).",
	}, []string{"reason"})
	s.reg.MustRegister(s.checks, s.duration, s.rejected, s.reloads, s.shadows, s.cacheHits, s.cacheMisses, s.cacheBypass)
}

// build makes the tenant snapshot for cfg; it does no network I/O (a
// jwks_url is fetched on first use).
func (s *Server) build(cfg *config.Config) (*snapshot, error) {
	snap := &snapshot{cfg: cfg, dryRun: cfg.Policy.DryRun, timeout: cfg.Authz.Timeout, tenants: make(map[string]*tenantState, len(cfg.Tenants))}
	snap.domains = cfg.HostTenants()
	if g := cfg.Envoy.GeoHeader.Name; g != "" {
		snap.geoHeader = strings.ToLower(g)
		for _, c := range cfg.GeoTrustedSources() {
			if p, err := netip.ParsePrefix(c); err == nil {
				snap.geoTrusted = append(snap.geoTrusted, p.Masked())
			}
		}
	}
	if cfg.TenantFromHostEnabled() {
		snap.hosts = snap.domains
	}
	if snap.timeout <= 0 {
		snap.timeout = config.DefaultAuthzTimout
	}
	s.issuers.setCache(cfg) // authz.jwks_cache (issuers.go)
	var errs []error
	for _, t := range cfg.Tenants {
		var keys jwtauth.KeySource
		var err error
		switch {
		case t.JWT.JWKSFile != "":
			keys, err = jwtauth.FileKeys(cfg.Path(t.JWT.JWKSFile))
		case t.JWT.JWKSURL.String() != "":
			keys, err = s.jwtURLKeys(snap, t.JWT)
		case len(t.Issuers) == 0:
			err = errors.New("no jwks_file or jwks_url")
		}
		if err == nil {
			var v *jwtauth.Verifier
			if keys != nil {
				v, err = jwtauth.NewVerifier(t.ID, t.JWT, keys, jwtauth.VerifierOptions{Now: s.now, CacheSize: s.cacheSize})
			}
			var tv identityVerifier
			if err == nil {
				tv, err = s.tenantVerifier(snap, t, v)
			}
			var pool *x509.CertPool
			if err == nil && t.TLS.ClientCAFile != "" {
				pool, err = config.LoadCertPool(cfg.Path(t.TLS.ClientCAFile))
			}
			if err == nil {
				t.Features = slices.Clone(t.Features)
				snap.tenants[t.ID] = &tenantState{cfg: t, term: envoyauth.TenantTerm(&t), verifier: tv, clientPool: pool}
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("tenant %q: %w", t.ID, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return snap, nil
}

// Update swaps in the tenants of cfg. On error the previous tenants keep
// serving and kailash_authz_config_rejected_total is incremented. Listener
// addresses and policy settings are read only by New.
func (s *Server) Update(cfg *config.Config) error {
	commit, err := s.Prepare(cfg)
	s.reloaded.config.Record(err)
	if err != nil {
		s.rejected.Inc()
		s.log.Error("authz config rejected; last good config keeps serving", "err", err)
		return err
	}
	commit()
	return nil
}

// GRPCAddr is the bound gRPC address.
func (s *Server) GRPCAddr() string { return s.grpcLn.Addr().String() }

// HTTPAddr is the bound HTTP address ("" when authz.http is not set).
func (s *Server) HTTPAddr() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// Registry is the server's Prometheus registry (served on /metrics).
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Engine is the policy engine in use.
func (s *Server) Engine() *policies.Engine { return s.engine }

// Shadow is the candidate bundle's engine (nil without shadow mode).
func (s *Server) Shadow() *policies.Engine { return s.shadow }

// EngineOptions turns the policy section of cfg into engine options: the
// bundle (directory, tarball or server), the decision and the signature
// check.
func EngineOptions(cfg *config.Config) (policies.EngineOptions, error) {
	p := cfg.Policy
	o := policies.EngineOptions{Dir: cfg.Path(p.Bundle), Decision: p.Decision, URL: p.BundleURL,
		PersistDir: cfg.Path(p.PersistDir), PollInterval: p.PollInterval, DecisionCache: p.DecisionCache.Entries()}
	if p.Signing.PublicKeyFile != "" {
		key, err := os.ReadFile(cfg.Path(p.Signing.PublicKeyFile))
		if err != nil {
			return o, fmt.Errorf("policy.signing.public_key_file: %w", err)
		}
		o.Verify = &policies.Verification{PublicKey: string(key), KeyID: p.Signing.KeyID, Algorithm: p.Signing.Algorithm, Scope: p.Signing.Scope}
	}
	return o, nil
}

// Close releases the listeners and background work of a server whose Serve
// was never called (Serve does this itself when it returns).
func (s *Server) Close() error {
	s.stopBG()
	if s.auth != nil {
		s.auth.Close()
	}
	var err error
	s.closeOnce.Do(func() {
		err = s.grpcLn.Close()
		if s.httpLn != nil {
			err = errors.Join(err, s.httpLn.Close())
		}
	})
	return err
}

// Serve answers Checks and gRPC health on the gRPC listener, and /metrics,
// /healthz, /readyz on the HTTP one, and hot-reloads a bundle directory,
// until ctx is cancelled; then it stops gracefully and returns nil.
func (s *Server) Serve(ctx context.Context) error {
	defer s.stopBG()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	gopts := append(serverOptions(), telemetry.GRPCServerTracing(s.tp)...)
	var wg sync.WaitGroup
	if s.tls != nil {
		gopts = append(gopts, grpc.Creds(s.tls.Credentials()))
		wg.Go(func() {
			if err := s.tls.Watch(ctx); err != nil {
				s.log.Error("cannot watch authz.tls files; changes need a restart", "err", err)
			}
		})
	}
	gs := grpc.NewServer(gopts...)
	authv3.RegisterAuthorizationServer(gs, s)
	if s.explain.Enabled() {
		alsv3.RegisterAccessLogServiceServer(gs, s) // Envoy's answers of 400 and above (explain_server.go)
	}
	if s.reflection {
		reflection.Register(gs)
	}

	if s.auth != nil {
		defer s.auth.Close()
		wg.Go(func() { s.auth.Run(ctx) }) // signing key rotation (and sync of a shared ring)
	}
	errc := make(chan error, 3)
	wg.Go(func() {
		err := telemetry.ServeGRPC(ctx, s.grpcLn, gs, telemetry.GRPCOptions{
			Name:   "authz",
			Health: []string{authv3.Authorization_ServiceDesc.ServiceName},
			Log:    s.log,
		})
		if err != nil {
			errc <- fmt.Errorf("authz grpc: %w", err)
			cancel()
		}
	})
	if s.httpLn != nil {
		mux := telemetry.NewMux(s.reg, s.ready)
		if s.auth != nil {
			s.auth.Routes(mux)
		}
		mux.HandleFunc("GET /health", s.opaHealth) // OPA's /health (health.go)
		mux.HandleFunc("GET /v1/admin/explain/{id}", s.serveExplain)
		for _, r := range s.routes {
			r(mux)
		}
		s.statusRoutes(mux)
		h := telemetry.HTTPTracing(mux, "authz", s.tp)
		wg.Go(func() {
			if err := telemetry.ServeHTTP(ctx, s.httpLn, h); err != nil {
				errc <- fmt.Errorf("authz http: %w", err)
				cancel()
			}
		})
	}
	watch := func(name string, e *policies.Engine) {
		wg.Go(func() {
			prevRev := e.Revision() // the Watch callback runs in one goroutine
			err := e.Watch(ctx, 200*time.Millisecond, func(err error) {
				s.reloaded.policy(name).Record(err)
				if err != nil {
					s.reloads.WithLabelValues(name, "error").Inc()
					s.log.Error("policy bundle rejected; last good version keeps serving", "bundle", name, "source", e.Source(), "err", err)
					s.audit.Record(ctx, audit.Event{Component: "authz", Action: audit.PolicyReject, Target: e.Source(), Outcome: audit.Error,
						Error: err.Error(), Detail: map[string]any{"bundle": name, "serving_revision": e.Revision()}})
					return
				}
				s.reloads.WithLabelValues(name, "ok").Inc()
				s.log.Info("policy bundle reloaded", "bundle", name, "source", e.Source(), "revision", e.Revision(), "decision_cache", e.CachePlan())
				s.audit.Record(ctx, audit.Event{Component: "authz", Action: audit.PolicyActivate, Target: e.Source(),
					Detail: map[string]any{"bundle": name, "revision": e.Revision(), "previous_revision": prevRev}})
				prevRev = e.Revision()
			})
			if err != nil {
				s.log.Warn("policy bundle not watched; changes need a restart", "bundle", name, "source", e.Source(), "err", err)
			}
		})
	}
	watch("active", s.engine)
	if s.shadow != nil {
		watch("shadow", s.shadow)
	}
	if s.status != nil {
		wg.Go(func() { s.runStatus(ctx, *s.status) })
	}
	if s.apiKeys != nil {
		wg.Go(func() { s.followAPIKeys(ctx) })
	}
	// The decision logger outlives the gRPC server: it stops after the last
	// Check has been answered and logged.
	logCtx, stopLog := context.WithCancel(context.WithoutCancel(ctx))
	logDone := make(chan struct{})
	if s.dlog != nil {
		go func() {
			defer close(logDone)
			_ = s.dlog.Run(logCtx)
		}()
	} else {
		close(logDone)
	}
	defer func() {
		stopLog()
		<-logDone
	}()
	s.log.Info("authz serving", "grpc", s.GRPCAddr(), "http", s.HTTPAddr(), "policy_revision", s.engine.Revision(), "decision_cache", s.engine.CachePlan())

	<-ctx.Done() // ServeGRPC stops the gRPC server gracefully
	wg.Wait()
	s.closeOnce.Do(func() {}) // the servers closed the listeners
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// streamWorkers is how many goroutines the gRPC server keeps to run
// Checks. An OPA evaluation recurses deeply: on a fresh goroutine (gRPC's
// default, one per request) the stack grows, and is copied, several times
// per Check — a quarter of the CPU of a Check over gRPC. A kept worker's
// stack stays grown. More concurrent Checks than workers run on new
// goroutines, as without workers.
const streamWorkers = 64

// serverOptions tune the gRPC server for many small unary Checks (write
// buffers are shared between connections by default).
func serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.NumStreamWorkers(streamWorkers)}
}

// Check answers one ext_authz request. The tenant comes only from the
// route's context_extensions (set by the control plane), never from a
// client header. A request without one (no route matched its host) is
// denied 404 as an unknown host; a tenant not configured here, a key fetch
// failure, an evaluation error or an invalid decision is a gRPC error, which
// Envoy turns into a 503.
// In drop-in mode there is no tenant or identity step. Every decision is
// logged (decision log) after the answer is ready, without waiting.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := time.Now()
	snap := s.snap.Load()
	// Envoy sends its own, usually shorter, deadline (grpc-timeout): then
	// the authz timeout adds nothing and its timer is not made.
	if dl, ok := ctx.Deadline(); !ok || dl.Sub(start) > snap.timeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, snap.timeout)
		defer cancel()
	}
	stripGeo := false
	if !s.dropIn {
		stripGeo = snap.geoHeader != "" && untrustedGeo(req, snap) // before the source becomes the client's
		trustedSource(req)
	}
	d := envoyauth.Decision{ID: newDecisionID(), DropIn: s.dropIn}
	var st checkState
	resp, result, reason, err := s.check(ctx, snap, req, &d, &st)
	if ok := resp.GetOkResponse(); stripGeo && ok != nil {
		ok.HeadersToRemove = append(ok.HeadersToRemove, snap.geoHeader) // nor does the upstream see it
	}
	if ok := resp.GetOkResponse(); st.apiKeyHeader != "" && ok != nil {
		ok.HeadersToRemove = append(ok.HeadersToRemove, st.apiKeyHeader) // the key is the gateway's business, not the upstream's
	}
	elapsed := time.Since(start)
	s.countCheck(result, reason)
	s.duration.Observe(elapsed.Seconds())
	sub := ""
	if d.Identity != nil {
		sub = d.Identity.Subject
	}
	level := slog.LevelDebug
	if result == ResultError && reason != reasonKeysUnavailable {
		// An unusable key source is logged by the source itself, once
		// per state change, not once per request.
		level = slog.LevelWarn
	}
	// Envoy's x-request-id (attributes.request.http.id is its stream id,
	// which nothing else logs).
	requestID := envoyauth.RequestHeader(req.GetAttributes().GetRequest().GetHttp(), "x-request-id")
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(attribute.String("kailash.decision_id", d.ID), attribute.String("kailash.tenant", d.Tenant),
			attribute.String("kailash.result", result), attribute.String("kailash.reason", reason))
		if result == ResultError {
			span.SetStatus(otelcodes.Error, reason)
		}
	}
	if s.log.Enabled(ctx, level) { // the arguments cost allocations even when the record is dropped
		s.log.Log(ctx, level, "authz decision", "decision_id", d.ID, "request_id", requestID, "trace_id", telemetry.TraceID(ctx),
			"tenant", d.Tenant, "sub", sub, "result", result, "reason", reason, "err", err)
	}
	if s.explain.Enabled() && (result != ResultAllow || st.dryRun) {
		s.recordExplain(ctx, req, &d, &st, result, reason, requestID, err, start)
	}
	if s.dlog != nil {
		ev := &policies.DecisionEvent{
			DecisionID: d.ID, RequestID: requestID, TraceID: telemetry.TraceID(ctx), SpanID: telemetry.SpanID(ctx),
			Timestamp: start.UTC(), Path: s.engine.Decision(),
			InputValue: st.input, Result: st.result,
			Tenant: d.Tenant, User: sub, RequestPath: req.GetAttributes().GetRequest().GetHttp().GetPath(),
			Outcome: result, Reason: reason, DryRun: st.dryRun, Shadow: st.shadow, Cached: st.cached,
			Metrics: map[string]int64{"timer_rego_query_eval_ns": st.eval.Nanoseconds(), "timer_server_handler_ns": elapsed.Nanoseconds()},
		}
		if st.revision != "" {
			ev.Bundles = map[string]policies.BundleInfo{"kailash": {Revision: st.revision}}
		}
		if err != nil {
			ev.Error = err.Error()
		}
		s.dlog.Log(ev)
	}
	return resp, err
}

// untrustedGeo removes envoy.geo_header from the request when the
// connection's peer (the proxy that would have set it) is not one of its
// trusted sources; it reports whether it did.
func untrustedGeo(req *authv3.CheckRequest, snap *snapshot) bool {
	h := req.GetAttributes().GetRequest().GetHttp()
	if envoyauth.RequestHeader(h, snap.geoHeader) == "" {
		return false
	}
	if peer, err := netip.ParseAddr(req.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress()); err == nil {
		peer = peer.Unmap()
		for _, p := range snap.geoTrusted {
			if p.Contains(peer) {
				return false
			}
		}
	}
	delete(h.Headers, snap.geoHeader)
	if hm := h.GetHeaderMap(); hm != nil {
		hm.Headers = slices.DeleteFunc(hm.Headers, func(v *corev3.HeaderValue) bool { return strings.EqualFold(v.GetKey(), snap.geoHeader) })
	}
	return true
}

// trustedSource puts the client address Envoy decided (trusted proxies,
// X-Forwarded-For hops: wire.HeaderClientAddress) in attributes.source,
// where Envoy puts the connection's peer: the policy, the decision log and
// explain see the client, not the load balancer.
func trustedSource(req *authv3.CheckRequest) {
	v := envoyauth.RequestHeader(req.GetAttributes().GetRequest().GetHttp(), wire.HeaderClientAddress)
	if v == "" {
		return
	}
	ip, err := netip.ParseAddr(v)
	if err != nil {
		return
	}
	a := req.GetAttributes()
	if a == nil {
		return
	}
	if a.Source == nil {
		a.Source = &authv3.AttributeContext_Peer{}
	}
	if a.Source.Address == nil {
		a.Source.Address = &corev3.Address{}
	}
	sa := a.Source.Address.GetSocketAddress()
	if sa == nil {
		sa = &corev3.SocketAddress{}
		a.Source.Address.Address = &corev3.Address_SocketAddress{SocketAddress: sa}
	}
	sa.Address = ip.String()
	sa.PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: 0} // the client's port is not known
}

// checkState is what one Check learned, for its decision log event and
// its explain record.
type checkState struct {
	input    ast.Value
	result   any
	revision string
	eval     time.Duration
	dryRun   bool
	cached   bool // the decision came from the decision cache
	shadow   *policies.ShadowEvent

	credential    string               // bearer, session_cookie, api_key, none ("" in drop-in mode)
	apiKeyHeader  string               // the header an API key came in (removed before the upstream)
	authErr       *envoyauth.AuthError // the identity check that failed (set only when explaining)
	claimedIssuer string               // the failed token's unverified iss
}

func (s *Server) check(ctx context.Context, snap *snapshot, req *authv3.CheckRequest, d *envoyauth.Decision, st *checkState) (*authv3.CheckResponse, string, string, error) {
	tenantID, routed := routeTenant(snap, req)
	d.Tenant = tenantID
	var id *envoyauth.Identity
	var tenant *ast.Term
	if !s.dropIn {
		if !routed {
			// No route carried a tenant: with per-tenant routes, a host
			// without a scope. Denied, as an unknown host, before anything
			// else is looked at.
			return envoyauth.UnknownHost(d.ID), ResultDeny, "unknown_host", nil
		}
		ts, ok := snap.tenants[d.Tenant]
		if !ok {
			return nil, ResultError, "unknown_tenant", status.Errorf(codes.FailedPrecondition, "route tenant %q is not configured", d.Tenant)
		}
		tenant = ts.term
		httpReq := req.GetAttributes().GetRequest().GetHttp()
		headers := envoyauth.RequestHeaders(httpReq)
		for name := range headers {
			if len(name) >= len(wire.HeaderPrefix) && strings.EqualFold(name[:len(wire.HeaderPrefix)], wire.HeaderPrefix) {
				d.ClientHeaders = append(d.ClientHeaders, name)
			}
		}
		if err := ctx.Err(); err != nil {
			return nil, ResultError, "deadline", status.FromContextError(err).Err()
		}
		var err error
		var apiKey string
		if s.apiKeys != nil {
			apiKey, st.apiKeyHeader = presentedAPIKey(headers)
		}
		if apiKey != "" {
			// A service account's API key (authz.api_keys_file).
			st.credential = "api_key"
			if id, err = s.verifyAPIKey(apiKey, d.Tenant, req); err != nil {
				ae := err.(*envoyauth.AuthError)
				if s.explain.Enabled() {
					st.authErr = ae
				}
				return envoyauth.Unauthenticated(ae, d.ID), ResultUnauthenticated, string(ae.Reason), nil
			}
		} else if ts.clientPool != nil && !hasToken(headers) && (ts.cfg.TLS.RequireClientCertificate || req.GetAttributes().GetSource().GetCertificate() != "") {
			// A client certificate, and no token: the service account it maps to.
			st.credential = "client_certificate"
			id, err = clientCertIdentity(req, ts)
			if id == nil {
				detail := "no client certificate"
				if err != nil {
					detail = err.Error()
				}
				ae := &envoyauth.AuthError{Reason: ReasonClientCertificate, Detail: detail}
				if s.explain.Enabled() {
					st.authErr = ae
				}
				return envoyauth.Unauthenticated(ae, d.ID), ResultUnauthenticated, string(ae.Reason), nil
			}
		} else if id, err = s.verifyToken(ctx, ts, headers, d.Tenant, st); err != nil {
			var ae *envoyauth.AuthError
			if errors.As(err, &ae) {
				return envoyauth.Unauthenticated(ae, d.ID), ResultUnauthenticated, string(ae.Reason), nil
			}
			return nil, ResultError, reasonKeysUnavailable, status.Error(codes.Unavailable, "verification keys are unavailable")
		}
		d.Identity = id
		if resp := s.cookieCSRF(ts, httpReq.GetMethod(), headers, d.ID); resp != nil {
			return resp, ResultDeny, "csrf", nil // identity from the session cookie, not from the tenant's pages (envoyauth/csrf.go)
		}
		if s.auth != nil {
			if d.IdentityToken, err = s.auth.IdentityToken(d.Tenant, id); err != nil {
				return nil, ResultError, "identity_token", status.Error(codes.Internal, "cannot sign the identity token")
			}
		}
	}

	// The input holds only what the policy can read (the decision cache's
	// plan) unless something else reads all of it: the decision log, the
	// explain endpoint, a shadow policy.
	idTerm, opts := envoyauth.IdentityTerm(id), s.inputOpts
	trimmed := s.dlog == nil && !s.explain.Enabled() && s.shadow == nil
	var inputErr error
	var built time.Duration // building the input, not evaluating
	build := func(need policies.InputNeed) (ast.Value, error) {
		t0 := time.Now()
		if trimmed && !need.All() {
			opts.Need = need.Needs
		}
		v, err := envoyauth.BuildInputTerms(req, idTerm, tenant, opts)
		inputErr, built = err, time.Since(t0)
		return v, err
	}

	evalStart := time.Now()
	var evalSpan trace.Span
	if s.tracer != nil && trace.SpanFromContext(ctx).IsRecording() {
		ctx, evalSpan = s.tracer.Start(ctx, "policy eval "+s.engine.Decision())
	}
	result, info, input, err := s.engine.EvalBuilt(ctx, build)
	if inputErr != nil {
		if evalSpan != nil {
			evalSpan.End()
		}
		var ie *envoyauth.InputError
		if errors.As(inputErr, &ie) {
			return envoyauth.BadRequest(ie, *d), ResultDeny, "request_parse_error", nil
		}
		return nil, ResultError, "input", status.Error(codes.Internal, "cannot build policy input")
	}
	st.input = input
	rev := info.Revision
	st.eval, st.revision, st.result, st.cached = time.Since(evalStart)-built, rev, result, info.Cache == policies.CacheHit
	s.countCache(info)
	if evalSpan != nil {
		evalSpan.SetAttributes(attribute.String("kailash.policy.revision", rev))
		if err != nil {
			evalSpan.SetStatus(otelcodes.Error, err.Error())
		}
		evalSpan.End()
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return nil, ResultError, "deadline", status.FromContextError(ctxErr).Err()
	}
	if s.shadow != nil {
		st.shadow = s.evalShadow(ctx, input, result, err, d.ID)
	}
	if err != nil {
		reason := "eval_error"
		if errors.Is(err, policies.ErrUndefined) {
			reason = "undefined"
		}
		return nil, ResultError, reason, status.Errorf(s.evalErrCode(), "policy evaluation failed: %s", reason)
	}
	resp, allowed, err := envoyauth.MapDecision(result, *d)
	if err != nil {
		return nil, ResultError, "bad_decision", status.Error(s.evalErrCode(), err.Error())
	}
	if allowed {
		return resp, ResultAllow, "policy", nil
	}
	dry := snap.dryRun
	if ts := snap.tenants[d.Tenant]; ts != nil && ts.cfg.DryRun != nil {
		dry = *ts.cfg.DryRun // the tenant's own dry_run over policy.dry_run
	}
	if dry {
		st.dryRun = true
		return envoyauth.DryRunAllow(*d), ResultDeny, "dry_run", nil
	}
	return resp, ResultDeny, "policy", nil
}

// hasToken reports whether the request carries a bearer token or our
// session cookie.
func hasToken(headers map[string]string) bool {
	return envoyauth.Bearer(headers["authorization"]) != "" || login.SessionCookie(headers["cookie"]) != ""
}

// verifyToken is the identity step for a bearer token or our session
// cookie: one of our session tokens, else the tenant's verifier.
func (s *Server) verifyToken(ctx context.Context, ts *tenantState, headers map[string]string, tenant string, st *checkState) (*envoyauth.Identity, error) {
	token := envoyauth.Bearer(headers["authorization"])
	st.credential = "bearer"
	if token == "" {
		token = login.SessionCookie(headers["cookie"])
		st.credential = "session_cookie"
	}
	if token == "" {
		st.credential = "none"
	}
	var id *envoyauth.Identity
	var err error
	ours := false
	if s.auth != nil && token != "" {
		id, ours, err = s.auth.VerifySession(ctx, token, tenant)
	}
	if !ours {
		id, err = ts.verifier.Verify(ctx, token)
	}
	var ae *envoyauth.AuthError
	if errors.As(err, &ae) && s.explain.Enabled() {
		st.authErr, st.claimedIssuer = ae, explain.ClaimedIssuer(token)
	}
	return id, err
}

// evalShadow evaluates the candidate bundle on the same input and compares
// its allow bit (or failure) with the active one's.
func (s *Server) evalShadow(ctx context.Context, input ast.Value, active any, activeErr error, id string) *policies.ShadowEvent {
	res, rev, err := s.shadow.EvalRevision(ctx, input)
	ev := &policies.ShadowEvent{Revision: rev, Result: res}
	if err == nil {
		ev.Allowed, err = policies.Allowed(res)
	}
	if err != nil {
		ev.Error = err.Error()
	}
	activeAllowed := false
	if activeErr == nil {
		activeAllowed, activeErr = policies.Allowed(active)
	}
	ev.Agrees = (activeErr == nil) == (err == nil) && activeAllowed == ev.Allowed
	if ev.Agrees {
		s.shadows.WithLabelValues("agree").Inc()
	} else {
		s.shadows.WithLabelValues("disagree").Inc()
		s.log.Info("shadow policy disagrees", "decision_id", id, "active_allowed", activeAllowed, "shadow_allowed", ev.Allowed,
			"active_revision", s.engine.Revision(), "shadow_revision", rev, "shadow_err", ev.Error)
	}
	return ev
}

// evalErrCode is the gRPC code of a failed evaluation or an unusable
// decision. opa-envoy-plugin returns such failures as plain Go errors,
// which grpc-go sends as Unknown; drop-in mode answers the same. Full mode
// keeps Internal (a server-side fault, as its docs and alerts say).
func (s *Server) evalErrCode() codes.Code {
	if s.dropIn {
		return codes.Unknown
	}
	return codes.Internal
}

// newDecisionID is a random (version 4) UUID, as opa-envoy-plugin's
// decision ids (uuid.NewString in its envoyauth.NewEvalResult), in every
// mode: in the decision log, the dynamic metadata and x-kailash-decision-id.
func newDecisionID() string {
	return uuid.NewString()
}
