package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	rlcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/kailash-gw/kailash/extauthz/explain"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/mtls"
	"github.com/kailash-gw/kailash/internal/telemetry"
	"github.com/kailash-gw/kailash/internal/wire"
)

// DefaultDecisionTimeout bounds the backend work of one ShouldRateLimit
// call, so the fail mode applies well within 50ms.
const DefaultDecisionTimeout = 40 * time.Millisecond

// Options tune a Server.
type Options struct {
	Logger *slog.Logger
	// Backend overrides the one the config selects (tests).
	Backend Backend
	// Now is the clock (default time.Now).
	Now func() time.Time
	// DecisionTimeout bounds one call's backend work (default 40ms).
	DecisionTimeout time.Duration
	// RLSConfig, when set, answers its domains with envoyproxy/ratelimit's
	// semantics (see SetRLSConfig).
	RLSConfig *RLSConfig
	// RLSResponseHeaders adds RateLimit-Limit/-Remaining/-Reset to answers
	// from RLSConfig (envoyproxy/ratelimit's LIMIT_RESPONSE_HEADERS_ENABLED).
	RLSResponseHeaders bool
	// TracerProvider makes each ShouldRateLimit a span continuing Envoy's
	// trace (Envoy sends traceparent on the call); nil is tracing off.
	TracerProvider trace.TracerProvider
}

// Server is the rate-limit service. Create it with New, serve it with Serve,
// follow config changes with Update.
type Server struct {
	rlsv3.UnimplementedRateLimitServiceServer

	log      *slog.Logger
	backend  Backend
	closer   func() error // closes the backend, nil for memory
	kind     string       // the backend's name in logs: memory, redis or custom
	now      func() time.Time
	timeout  time.Duration
	failOpen bool
	reg      *prometheus.Registry
	m        *metrics
	tp       trace.TracerProvider  // nil: tracing off
	overs    *explain.RateLimitLog // over-limit answers by decision id, for kailash explain
	bg       context.Context       // the shared over-limit log's writer; ends with the backend
	stopBG   context.CancelFunc
	ready    *telemetry.Readiness // /readyz (readiness.go)

	rules atomic.Pointer[Rules] // one immutable snapshot per request
	// rls are the envoyproxy/ratelimit-format limits, nil when none.
	rls        atomic.Pointer[RLSConfig]
	rlsHeaders bool

	grpcLn, httpLn net.Listener
	started        atomic.Bool
	tls            *mtls.Server // ratelimit.tls: mutual TLS on the gRPC port; nil is plaintext

	// lastLog rate-limits the backend error log to one line per second.
	lastLog atomic.Int64
}

var _ rlsv3.RateLimitServiceServer = (*Server)(nil)

// New builds the server for cfg.RateLimit and binds its addresses. With
// backend redis nothing is dialled yet: Redis may come up later.
func New(cfg *config.Config, o Options) (*Server, error) {
	if cfg == nil {
		return nil, errors.New("ratelimit: nil config")
	}
	rc := cfg.RateLimit
	if rc.GRPC.String() == "" {
		return nil, errors.New("ratelimit: ratelimit.grpc: required")
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "ratelimit")
	reg := telemetry.NewRegistry()
	s := &Server{
		log:      log,
		now:      o.Now,
		timeout:  o.DecisionTimeout,
		failOpen: rc.FailMode == config.FailOpen,
		reg:      reg,
		tp:       o.TracerProvider,
		overs:    explain.NewRateLimitLog(cfg.ExplainRecords()),
		m:        newMetrics(reg),

		rlsHeaders: o.RLSResponseHeaders,
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.timeout <= 0 {
		s.timeout = DefaultDecisionTimeout
	}
	s.bg, s.stopBG = context.WithCancel(context.Background())
	s.backend, s.kind = o.Backend, "custom"
	if s.backend == nil {
		s.kind = rc.Backend
		switch rc.Backend {
		case "", config.BackendMemory:
			s.backend, s.kind = NewMemory(), config.BackendMemory
		case config.BackendRedis:
			var pw string
			if rc.Redis.PasswordEnv != "" {
				pw = os.Getenv(rc.Redis.PasswordEnv)
			}
			timeout := rc.Redis.Timeout
			if timeout == 0 {
				timeout = config.DefaultRedisTimeout
			}
			r := NewRedis(RedisOptions{
				Addr: rc.Redis.Addr.String(), Password: pw, DB: rc.Redis.DB, Timeout: timeout,
				OnStateChange: func(open bool, err error) {
					if open {
						s.m.breakerOpen.Set(1)
						s.log.Error("redis unreachable: circuit open, fail mode applies", "fail_mode", s.failMode(), "err", err)
					} else {
						s.m.breakerOpen.Set(0)
						s.log.Info("redis reachable again: circuit closed")
					}
				},
			})
			s.backend, s.closer = r, r.Close
			s.overs.Share(s.bg, r.c, cfg.ExplainTTL()) // any replica explains any replica's over-limit answers
		default:
			return nil, fmt.Errorf("ratelimit: ratelimit.backend: %q: want memory or redis", rc.Backend)
		}
	}
	s.ready = s.readiness()
	reg.MustRegister(s.ready)
	s.rules.Store(NewRules(cfg))
	s.m.rules.Set(float64(s.rules.Load().Len()))
	if o.RLSConfig != nil {
		s.SetRLSConfig(o.RLSConfig)
	}
	var err error
	if s.tls, err = mtls.NewServer(cfg, "ratelimit.tls", rc.TLS, s.log); err != nil {
		s.closeBackend()
		return nil, fmt.Errorf("ratelimit: %w", err)
	}
	if s.tls != nil {
		reg.MustRegister(s.tls.Collector())
	}
	if s.grpcLn, err = net.Listen("tcp", rc.GRPC.String()); err != nil {
		s.closeBackend()
		return nil, fmt.Errorf("ratelimit: ratelimit.grpc: %w", err)
	}
	if rc.HTTP.String() != "" {
		if s.httpLn, err = net.Listen("tcp", rc.HTTP.String()); err != nil {
			_ = s.grpcLn.Close()
			s.closeBackend()
			return nil, fmt.Errorf("ratelimit: ratelimit.http: %w", err)
		}
	}
	return s, nil
}

func (s *Server) failMode() string {
	if s.failOpen {
		return config.FailOpen
	}
	return config.FailClosed
}

func (s *Server) closeBackend() {
	s.stopBG()
	if s.closer != nil {
		_ = s.closer()
	}
}

// GRPCAddr is the bound gRPC address.
func (s *Server) GRPCAddr() string { return s.grpcLn.Addr().String() }

// HTTPAddr is the bound telemetry address, or "".
func (s *Server) HTTPAddr() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// Registry is the server's Prometheus registry.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Update swaps in the quotas of cfg; requests in flight keep the rules they
// started with. Backend and addresses change only on restart.
func (s *Server) Update(cfg *config.Config) error {
	if cfg == nil {
		return errors.New("ratelimit: nil config")
	}
	r := NewRules(cfg)
	s.rules.Store(r)
	s.m.rules.Set(float64(r.Len()))
	return nil
}

// ShouldRateLimit implements envoy.service.ratelimit.v3.RateLimitService.
// Descriptors no quota matches are OK with no limit. If the counters cannot
// be reached, fail open answers OK and fail closed answers a gRPC
// Unavailable error (Envoy, configured fail-closed by xds, answers 503).
func (s *Server) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	start := s.now()
	rules := s.rules.Load()
	if c := s.rls.Load(); c != nil && c.Has(req.GetDomain()) {
		ctx, cancel := context.WithTimeout(ctx, s.timeout)
		defer cancel()
		return s.shouldRLS(ctx, c, req, start)
	}
	if req.GetDomain() != wire.RateLimitDomain {
		s.m.decisions.WithLabelValues("unknown_domain").Inc()
		return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}
	decisionID := decisionOf(req)
	for _, d := range req.GetDescriptors() {
		st := &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
		resp.Statuses = append(resp.Statuses, st)
		q, key, ok := rules.match(d)
		if !ok {
			q, key, ok = overrideQuota(d)
		}
		if !ok {
			continue
		}
		hits := uint64(req.GetHitsAddend())
		if d.GetHitsAddend() != nil {
			hits = d.GetHitsAddend().GetValue()
		}
		if hits == 0 {
			hits = 1
		}
		res, err := s.backend.Take(ctx, key, q.Limit, q.Unit.Duration(), hits, start)
		if err != nil {
			s.m.backendErrors.Inc()
			s.m.decisions.WithLabelValues("fail_" + s.failMode()).Inc()
			s.logBackendError(err)
			if s.failOpen {
				continue
			}
			return nil, status.Error(codes.Unavailable, "rate-limit counters unavailable")
		}
		st.CurrentLimit = &rlsv3.RateLimitResponse_RateLimit{
			Name:            q.Name,
			RequestsPerUnit: uint32(min(q.Limit, math.MaxUint32)),
			Unit:            unitProto(q.Unit),
		}
		st.DurationUntilReset = durationpb.New(res.Reset)
		if res.Used < q.Limit {
			st.LimitRemaining = uint32(min(q.Limit-res.Used, math.MaxUint32))
		}
		if !res.Allowed {
			st.Code = rlsv3.RateLimitResponse_OVER_LIMIT
			resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
			s.m.decisions.WithLabelValues("over_limit").Inc()
			if span := trace.SpanFromContext(ctx); span.IsRecording() {
				span.SetAttributes(attribute.String("kailash.ratelimit.quota", q.Name), attribute.Int64("kailash.ratelimit.limit", int64(min(q.Limit, math.MaxInt64))),
					attribute.String("kailash.ratelimit.unit", string(q.Unit)), attribute.String("kailash.ratelimit.code", "OVER_LIMIT"))
			}
			if s.log.Enabled(ctx, slog.LevelDebug) {
				s.log.Debug("over limit", "decision_id", decisionID, "quota", q.Name, "limit", q.Limit, "unit", q.Unit, "used", res.Used, "trace_id", telemetry.TraceID(ctx))
			}
			if decisionID != "" && s.overs != nil {
				desc := make(map[string]string, len(d.GetEntries()))
				for _, e := range d.GetEntries() {
					desc[e.GetKey()] = e.GetValue()
				}
				s.overs.Add(decisionID, explain.RateLimitStep{Quota: q.Name, Descriptor: desc, Limit: q.Limit, Window: string(q.Unit), Count: res.Used, Time: start.UTC()})
			}
		} else {
			s.m.decisions.WithLabelValues("ok").Inc()
		}
	}
	s.m.latency.Observe(s.now().Sub(start).Seconds())
	return resp, nil
}

// overrideQuota is the quota of a descriptor whose limit the policy chose
// (the per-role execution limit, wire.QuotaRoleHour, with Envoy's limit
// override): counted per tenant and user.
func overrideQuota(d *rlcommonv3.RateLimitDescriptor) (*config.Quota, string, bool) {
	l, es := d.GetLimit(), d.GetEntries()
	if l == nil || l.GetRequestsPerUnit() == 0 || len(es) < 3 || es[0].GetKey() != wire.DescTenant || es[0].GetValue() == "" ||
		es[1].GetKey() != wire.DescQuota || es[1].GetValue() != wire.QuotaRoleHour || es[2].GetKey() != wire.DescUser || es[2].GetValue() == "" {
		return nil, "", false
	}
	var unit config.Unit
	switch l.GetUnit() {
	case typev3.RateLimitUnit_SECOND:
		unit = config.Second
	case typev3.RateLimitUnit_MINUTE:
		unit = config.Minute
	case typev3.RateLimitUnit_HOUR:
		unit = config.Hour
	case typev3.RateLimitUnit_DAY:
		unit = config.Day
	default:
		return nil, "", false
	}
	name := es[0].GetValue() + "/" + wire.QuotaRoleHour
	return &config.Quota{Name: name, Limit: uint64(l.GetRequestsPerUnit()), Unit: unit}, name + "|" + es[2].GetValue(), true
}

// decisionOf is the decision id the call carries (wire.DescDecisionID).
func decisionOf(req *rlsv3.RateLimitRequest) string {
	for _, d := range req.GetDescriptors() {
		if e := d.GetEntries(); len(e) == 1 && e[0].GetKey() == wire.DescDecisionID {
			return e[0].GetValue()
		}
	}
	return ""
}

// Explain is what this service (with Redis: any replica) answered
// OVER_LIMIT for decisionID.
func (s *Server) Explain(decisionID string) []explain.RateLimitStep {
	return s.overs.GetShared(context.Background(), decisionID)
}

// serveExplain is GET /v1/admin/explain/{decision id}: the quotas the
// decision's request went over (a JSON list, empty when none).
func (s *Server) serveExplain(w http.ResponseWriter, r *http.Request) {
	steps := s.overs.GetShared(r.Context(), r.PathValue("id"))
	if steps == nil {
		steps = []explain.RateLimitStep{}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(steps)
}

func (s *Server) logBackendError(err error) {
	now := time.Now().UnixNano()
	last := s.lastLog.Load()
	if now-last < int64(time.Second) || !s.lastLog.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("rate-limit counters unavailable; fail mode applied", "fail_mode", s.failMode(), "err", err)
}

func unitProto(u config.Unit) rlv3Unit {
	switch u {
	case config.Second:
		return rlv3UnitSecond
	case config.Minute:
		return rlv3UnitMinute
	case config.Hour:
		return rlv3UnitHour
	case config.Day:
		return rlv3UnitDay
	}
	return rlv3UnitUnknown
}

type rlv3Unit = rlsv3.RateLimitResponse_RateLimit_Unit

const (
	rlv3UnitUnknown = rlsv3.RateLimitResponse_RateLimit_UNKNOWN
	rlv3UnitSecond  = rlsv3.RateLimitResponse_RateLimit_SECOND
	rlv3UnitMinute  = rlsv3.RateLimitResponse_RateLimit_MINUTE
	rlv3UnitHour    = rlsv3.RateLimitResponse_RateLimit_HOUR
	rlv3UnitDay     = rlsv3.RateLimitResponse_RateLimit_DAY
)

// Serve serves the rate-limit service and gRPC health on the gRPC listener
// and telemetry on the HTTP listener until ctx is cancelled; then it stops
// gracefully and closes the backend. Serve may be called once.
func (s *Server) Serve(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("ratelimit: Serve called twice or after Close")
	}
	defer s.closeBackend()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gopts := telemetry.GRPCServerTracing(s.tp)
	if s.tls != nil {
		gopts = append(gopts, grpc.Creds(s.tls.Credentials()))
	}
	gs := grpc.NewServer(gopts...)
	rlsv3.RegisterRateLimitServiceServer(gs, s)

	var wg sync.WaitGroup
	if s.tls != nil {
		wg.Go(func() {
			if err := s.tls.Watch(ctx); err != nil {
				s.log.Error("cannot watch ratelimit.tls files; changes need a restart", "err", err)
			}
		})
	}
	errc := make(chan error, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := telemetry.ServeGRPC(ctx, s.grpcLn, gs, telemetry.GRPCOptions{
			Name:   "ratelimit",
			Health: []string{"", rlsv3.RateLimitService_ServiceDesc.ServiceName},
			Log:    s.log,
		})
		if err != nil {
			errc <- fmt.Errorf("ratelimit: grpc: %w", err)
		}
	}()
	if s.httpLn != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mux := telemetry.NewMux(s.reg, s.ready)
			mux.HandleFunc("GET /v1/admin/explain/{id}", s.serveExplain)
			if err := telemetry.ServeHTTP(ctx, s.httpLn, mux); err != nil {
				errc <- fmt.Errorf("ratelimit: http: %w", err)
			}
		}()
	}
	rlsLimits := 0
	if c := s.rls.Load(); c != nil {
		rlsLimits = c.Len()
	}
	s.log.Info("ratelimit serving", "grpc", s.GRPCAddr(), "http", s.HTTPAddr(), "backend", s.kind, "fail_mode", s.failMode(), "quotas", s.rules.Load().Len(), "rls_limits", rlsLimits)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel() // stops the gRPC server (gracefully), the HTTP server and the TLS watch
	wg.Wait()
	return err
}

// Close releases the listeners of a Server whose Serve was never called.
func (s *Server) Close() error {
	if !s.started.CompareAndSwap(false, true) {
		return nil
	}
	s.closeBackend()
	err := s.grpcLn.Close()
	if s.httpLn != nil {
		err = errors.Join(err, s.httpLn.Close())
	}
	return err
}
