package workflow

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/telemetry"
)

// Options for the runner server.
type Options struct {
	Logger *slog.Logger
	// Middleware, when set, wraps the API handler (tracing, recording in tests).
	Middleware func(http.Handler) http.Handler
}

// Server is the runner's HTTP API. Envoy forwards authorized requests to it
// with the identity headers ext_authz set (x-kailash-tenant, -user, -roles).
type Server struct {
	log       *slog.Logger
	wrap      func(http.Handler) http.Handler
	ln        net.Listener
	workflows atomic.Pointer[map[string]*Workflow]
	reg       *prometheus.Registry
	execs     *prometheus.CounterVec
	dur       prometheus.Histogram
}

// maxBody bounds a request body the runner reads.
const maxBody = 1 << 20

// New loads the workflows named by cfg.Runner.Workflows and binds cfg.Runner.HTTP.
func New(cfg *config.Config, opts Options) (*Server, error) {
	s := &Server{log: opts.Logger, wrap: opts.Middleware, reg: telemetry.NewRegistry()}
	if s.log == nil {
		s.log = slog.Default()
	}
	wfs := map[string]*Workflow{}
	if cfg.Runner.Workflows != "" {
		var err error
		if wfs, err = LoadDir(cfg.Path(cfg.Runner.Workflows)); err != nil {
			return nil, fmt.Errorf("runner.workflows: %w", err)
		}
	}
	s.workflows.Store(&wfs)
	s.execs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kailash_runner_executions_total", Help: "Workflow executions by workflow and outcome.",
	}, []string{"workflow", "outcome"})
	s.dur = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "kailash_runner_execution_duration_seconds", Help: "Time to execute a workflow.",
		Buckets: prometheus.ExponentialBuckets(0.00005, 4, 10),
	})
	s.reg.MustRegister(s.execs, s.dur)
	ln, err := net.Listen("tcp", cfg.Runner.HTTP)
	if err != nil {
		return nil, fmt.Errorf("runner.http: %w", err)
	}
	s.ln = ln
	return s, nil
}

// Addr is the bound HTTP address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves the API until ctx is cancelled.
func (s *Server) Serve(ctx context.Context) error {
	h := s.Handler()
	if s.wrap != nil {
		h = s.wrap(h)
	}
	return telemetry.ServeHTTP(ctx, s.ln, h)
}

// Handler is the runner's HTTP API plus /metrics, /healthz and /readyz.
func (s *Server) Handler() http.Handler {
	mux := telemetry.Mux(s.reg, nil)
	mux.HandleFunc("GET /v1/workflows", s.list)
	mux.HandleFunc("POST /v1/workflows/{name}/executions", s.execute)
	return mux
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	if _, ok := caller(w, r); !ok {
		return
	}
	var names []string
	for n := range *s.workflows.Load() {
		names = append(names, n)
	}
	writeJSON(w, http.StatusOK, map[string]any{"workflows": names})
}

func (s *Server) execute(w http.ResponseWriter, r *http.Request) {
	c, ok := caller(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	wf := (*s.workflows.Load())[name]
	if wf == nil {
		writeError(w, http.StatusNotFound, "unknown_workflow", fmt.Sprintf("no workflow named %q", name))
		return
	}
	input := map[string]any{}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", err.Error())
		return
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := json.Unmarshal(body, &input); err != nil {
			writeError(w, http.StatusBadRequest, "bad_json", "request body must be a JSON object: "+err.Error())
			return
		}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	res, err := wf.Execute(ctx, input, c)
	s.dur.Observe(time.Since(start).Seconds())
	id := newID()
	if err != nil {
		s.execs.WithLabelValues(name, "failed").Inc()
		s.log.Warn("execution failed", "workflow", name, "execution", id, "tenant", c.Tenant, "err", err)
		writeError(w, http.StatusUnprocessableEntity, "execution_failed", err.Error())
		return
	}
	s.execs.WithLabelValues(name, "completed").Inc()
	writeJSON(w, http.StatusOK, map[string]any{
		"execution_id": id,
		"workflow":     name,
		"status":       "completed",
		"tenant":       c.Tenant,
		"user":         c.User,
		"output":       res.Output,
		"nodes":        res.Nodes,
	})
}

// caller reads the identity Envoy forwarded. Without it the request did not
// come through ext_authz: refuse.
func caller(w http.ResponseWriter, r *http.Request) (Caller, bool) {
	c := Caller{Tenant: r.Header.Get("x-kailash-tenant"), User: r.Header.Get("x-kailash-user")}
	if roles := r.Header.Get("x-kailash-roles"); roles != "" {
		c.Roles = strings.Split(roles, ",")
	}
	if c.Tenant == "" || c.User == "" {
		writeError(w, http.StatusUnauthorized, "no_identity", "request carries no identity from the gateway")
		return c, false
	}
	return c, true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, kind, msg string) {
	writeJSON(w, code, map[string]string{"error": kind, "message": msg})
}

func newID() string { return strings.ToLower(rand.Text()) }
