// Package telemetry is the shared plumbing every server uses for logs,
// Prometheus metrics and HTTP health endpoints.
package telemetry

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry with the Go and process collectors and
// kailash_build_info. Each server owns one, so several servers can live in
// one process (kailash up).
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), newBuildInfo())
	return r
}

// Secret is a string that never prints: use it for any credential that may
// reach a log line.
type Secret string

func (Secret) String() string               { return "[redacted]" }
func (Secret) LogValue() slog.Value         { return slog.StringValue("[redacted]") }
func (Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// Mux returns an HTTP mux with /metrics, /healthz (process alive) and /readyz
// (ready() returns nil and the process is not draining: see SetDraining).
// Callers may add their own routes. Components with several inputs use
// NewMux with a Readiness instead.
func Mux(reg *prometheus.Registry, ready func() error) *http.ServeMux {
	r := NewReadiness("")
	if ready != nil {
		r.Add(CheckFunc("ready", ready))
	}
	return NewMux(reg, r)
}

// NewMux returns an HTTP mux with /metrics, /healthz (liveness: the process
// answers) and /readyz, /readyz/{check} (r). Callers may add their own
// routes.
func NewMux(reg *prometheus.Registry, r *Readiness) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	r.Handle(mux)
	return mux
}

// ServeHTTP serves h on ln until ctx is cancelled, then shuts down
// gracefully: it stops accepting, closes idle connections and lets requests
// in flight finish for at most ShutdownGrace (5s unless set), then closes
// what is left. It returns nil after a clean shutdown.
func ServeHTTP(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownGrace())
		defer cancel()
		err := srv.Shutdown(sctx)
		if err != nil {
			_ = srv.Close() // the grace ran out: cut what is still open
		}
		if e := <-errc; e != nil && !errors.Is(e, http.ErrServerClosed) {
			return e
		}
		return err
	}
}
