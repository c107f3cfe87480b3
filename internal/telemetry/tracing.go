package telemetry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/stats"
)

// TracingConfig is what NewTracing needs: config.Telemetry, resolved.
type TracingConfig struct {
	// Endpoint is host:port of an OTLP/gRPC collector; "" is off.
	Endpoint string
	// TLS dials the collector with TLS (an https endpoint), verified
	// against CAFile or the system roots.
	TLS    bool
	CAFile string
	// Ratio of new traces sampled (a caller's decision is followed).
	Ratio float64
	// ServiceName is the prefix of service.name (service.name is
	// <ServiceName>-<component>).
	ServiceName string
	// Log reports export failures (rate limited by the SDK's own retry).
	Log *slog.Logger
}

// Tracing hands out a TracerProvider per component, all exporting to one
// collector. With no endpoint every provider is a no-op: instrumented code
// pays one interface call and allocates nothing.
type Tracing struct {
	cfg       TracingConfig
	mu        sync.Mutex
	providers []*sdktrace.TracerProvider
}

// Propagator is W3C trace context and baggage, the propagation Envoy's
// OpenTelemetry tracer speaks.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

var setGlobals sync.Once

// NewTracing prepares tracing; it dials nothing until a provider exports.
func NewTracing(cfg TracingConfig) *Tracing {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Endpoint != "" {
		setGlobals.Do(func() {
			otel.SetTextMapPropagator(Propagator)
			otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
				cfg.Log.Warn("tracing: exporting spans failed", "err", err)
			}))
		})
	}
	return &Tracing{cfg: cfg}
}

// Enabled reports whether spans are exported.
func (t *Tracing) Enabled() bool { return t != nil && t.cfg.Endpoint != "" }

// Provider is the TracerProvider of a component ("authz", "runner",
// "ratelimit"): service.name <ServiceName>-<component>. A nil Tracing or
// one without an endpoint gives a no-op provider.
func (t *Tracing) Provider(component string) (trace.TracerProvider, error) {
	if !t.Enabled() {
		return noop.NewTracerProvider(), nil
	}
	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(t.cfg.Endpoint), otlptracegrpc.WithTimeout(5 * time.Second)}
	if t.cfg.TLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if t.cfg.CAFile != "" {
			pem, err := os.ReadFile(t.cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("telemetry.ca_file: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("telemetry.ca_file: %s holds no PEM certificate", t.cfg.CAFile)
			}
		}
		opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(tc)))
	} else {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	exp, err := otlptracegrpc.New(context.Background(), opts...)
	if err != nil {
		return nil, fmt.Errorf("tracing exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName(t.cfg.ServiceName+"-"+component),
		semconv.ServiceVersion(Version()),
	))
	if err != nil {
		res = resource.Default()
	}
	// OTEL_RESOURCE_ATTRIBUTES adds to (never replaces) the service name.
	if env, err := resource.New(context.Background(), resource.WithFromEnv()); err == nil {
		if m, err := resource.Merge(env, res); err == nil {
			res = m
		}
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(time.Second)),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(t.cfg.Ratio))),
	)
	t.mu.Lock()
	t.providers = append(t.providers, tp)
	t.mu.Unlock()
	return tp, nil
}

// Shutdown flushes the spans not yet exported and stops every provider,
// within ctx.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	ps := t.providers
	t.providers = nil
	t.mu.Unlock()
	var errs []error
	for _, p := range ps {
		errs = append(errs, p.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// TraceID is the trace id of ctx's span, "" when there is none: for log
// lines and decision log entries.
func TraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.HasTraceID() {
		return ""
	}
	return sc.TraceID().String()
}

// SpanID is the span id of ctx's span, "" when there is none.
func SpanID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.HasSpanID() {
		return ""
	}
	return sc.SpanID().String()
}

// GRPCServerTracing are the server options that make every RPC a span
// continuing the caller's traceparent; none when tp is nil (tracing off:
// no stats handler, nothing per call).
func GRPCServerTracing(tp trace.TracerProvider) []grpc.ServerOption {
	if tp == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(tp),
		otelgrpc.WithPropagators(Propagator),
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool {
			return !strings.HasPrefix(info.FullMethodName, "/grpc.health.v1.Health/")
		}),
	))}
}

// HTTPTracing wraps h so each request is a span named by its route
// pattern, continuing the caller's traceparent; /metrics and the health
// endpoints are not traced. h itself when tp is nil.
func HTTPTracing(h http.Handler, service string, tp trace.TracerProvider) http.Handler {
	if tp == nil {
		return h
	}
	return otelhttp.NewHandler(h, service,
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithPropagators(Propagator),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelhttp.WithFilter(func(r *http.Request) bool {
			switch p := r.URL.Path; {
			case p == "/metrics", p == "/healthz", p == "/readyz", p == "/health", strings.HasPrefix(p, "/readyz/"):
				return false
			}
			return true
		}),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			if r.Pattern != "" {
				return r.Pattern
			}
			return r.Method
		}),
	)
}

// HTTPClientTracing wraps an outgoing transport so each request is a
// client span and carries traceparent; rt itself when tp is nil.
func HTTPClientTracing(rt http.RoundTripper, tp trace.TracerProvider) http.RoundTripper {
	if tp == nil {
		return rt
	}
	return otelhttp.NewTransport(rt,
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithPropagators(Propagator),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
	)
}
