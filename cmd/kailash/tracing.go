package main

import (
	"context"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/telemetry"
)

// tracers are the process's OpenTelemetry providers, from cfg.Telemetry:
// one per component, all exporting to telemetry.otlp_endpoint.
type tracers struct {
	t *telemetry.Tracing
}

func newTracers(cfg *config.Config, log *slog.Logger) *tracers {
	tc := cfg.Telemetry
	if !tc.Tracing() {
		return &tracers{}
	}
	u := tc.OTLPEndpoint.URL()
	t := telemetry.NewTracing(telemetry.TracingConfig{
		Endpoint: u.Host, TLS: u.Scheme == "https", CAFile: cfg.Path(tc.CAFile),
		Ratio: tc.Ratio(), ServiceName: tc.ServiceName, Log: log,
	})
	log.Info("tracing on", "otlp_endpoint", u.Redacted(), "sampling_ratio", tc.Ratio(), "service_name", tc.ServiceName)
	return &tracers{t: t}
}

// provider is component's TracerProvider; nil when tracing is off, which
// the servers take as "install no instrumentation at all".
func (t *tracers) provider(component string) (trace.TracerProvider, error) {
	if !t.t.Enabled() {
		return nil, nil
	}
	return t.t.Provider(component)
}

// shutdown exports the spans still buffered (bounded: a collector that is
// down does not hold up the exit).
func (t *tracers) shutdown(log *slog.Logger) {
	if !t.t.Enabled() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := t.t.Shutdown(ctx); err != nil {
		log.Warn("tracing: spans not exported at exit", "err", err)
	}
}
