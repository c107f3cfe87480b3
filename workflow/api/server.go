package api

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/strictjson"
	"github.com/kailash-gw/kailash/internal/telemetry"
	"github.com/kailash-gw/kailash/internal/wire"
	"github.com/kailash-gw/kailash/policies"
	"github.com/kailash-gw/kailash/workflow"
	"github.com/kailash-gw/kailash/workflow/store"
)

// Options for the runner server.
type Options struct {
	Logger *slog.Logger
	// Middleware, when set, wraps the API handler (tracing, recording in tests).
	Middleware func(http.Handler) http.Handler
	// Policy answers the permission_check node. Nil: an engine over
	// policy.bundle (the embedded bundle when empty) evaluating
	// runner.permission_decision, built on first use.
	Policy workflow.PolicyEvaluator
	// store.Store replaces the store runner.postgres_dsn / runner.data_dir name
	// (tests); the server closes it.
	Store store.Store
	// EventPolicy decides whether a subscriber may see a workflow's events
	// (its department/clearance labels). Nil: an engine over policy.bundle
	// evaluating runner.event_decision (DefaultEventDecision), watched for
	// changes, built on first use.
	EventPolicy workflow.PolicyEvaluator
	// TracerProvider makes each API request a span continuing Envoy's
	// traceparent, and each node a child span; nil is tracing off.
	TracerProvider trace.TracerProvider
}

// Server is the runner's HTTP API. Envoy forwards authorized requests to it
// with the identity ext_authz attached.
type Server struct {
	log       *slog.Logger
	wrap      func(http.Handler) http.Handler
	tp        trace.TracerProvider // nil: tracing off
	ln        net.Listener
	workflows atomic.Pointer[map[string]*workflow.Workflow] // from runner.workflows, shared by every tenant
	exec      *workflow.Executor
	store     store.Store
	compiled  compileCache
	defs      defCache             // definitions for executions (defcache.go)
	verify    *verifier            // nil: trust the x-kailash-* headers
	ready     *telemetry.Readiness // /readyz (readiness.go)
	events    *broker
	policy    workflow.PolicyEvaluator // permission decisions (permission_check, cancelling others' runs)
	eventPol  workflow.PolicyEvaluator // may a subscriber see a workflow's events
	peers     *store.Peers             // the other runners on the database; nil on SQLite
	fanout    *fanout                  // this replica's events to the others; nil without peers

	// base is cancelled when Serve returns; asynchronous executions run under it.
	base     context.Context
	stop     context.CancelFunc
	running  sync.Map // execution id -> *runningExec
	inflight sync.WaitGroup
	purge    *purger    // runner.retention; nil keeps everything
	resumeMu sync.Mutex // guards closing, with inflight.Add of a resumed execution
	closing  bool
	bg       sync.WaitGroup // the purge loop, which ends with base

	reg       *prometheus.Registry
	execs     *prometheus.CounterVec
	dur       *prometheus.HistogramVec // by tenant
	biz       *businessMetrics
	leaseLost *prometheus.CounterVec // results and node records refused: another runner owns the execution
}

type runningExec struct {
	tenant, workflow, user string
	cancel                 context.CancelCauseFunc
}

// maxBody bounds a request body the runner reads.
const maxBody = 1 << 20

//go:embed openapi.json
var openAPI []byte

// New loads the workflows named by cfg.Runner.Workflows, opens the store
// (SQLite in cfg.Runner.DataDir, marking executions a previous run left
// running as interrupted; or PostgreSQL, taking over only executions whose
// lease ended, docs/deploy.md) and binds cfg.Runner.HTTP.
func New(cfg *config.Config, opts Options) (*Server, error) {
	s := &Server{log: opts.Logger, wrap: opts.Middleware, tp: opts.TracerProvider, reg: telemetry.NewRegistry(), events: newBroker()}
	if s.log == nil {
		s.log = slog.Default()
	}
	wfs := map[string]*workflow.Workflow{}
	if cfg.Runner.Workflows != "" {
		var err error
		if wfs, err = workflow.LoadDir(cfg.Path(cfg.Runner.Workflows)); err != nil {
			return nil, fmt.Errorf("runner.workflows: %w", err)
		}
	}
	s.workflows.Store(&wfs)
	for _, t := range cfg.Runner.Limits.AllowedNodeTypes {
		if !workflow.IsNodeType(t) {
			return nil, fmt.Errorf("runner.limits.allowed_node_types: unknown node type %q (known: %s)", t, strings.Join(workflow.NodeTypes(), ", "))
		}
	}
	if cfg.Runner.IdentityJWKS != "" {
		src := cfg.Runner.IdentityJWKS
		if !strings.HasPrefix(src, "http://") && !strings.HasPrefix(src, "https://") {
			src = cfg.Path(src)
		}
		v, err := newVerifier(src, cfg.Runner.IdentityAudience)
		if err != nil {
			return nil, err
		}
		s.verify = v
	}
	for role, l := range cfg.Runner.RoleLimits {
		for _, t := range l.AllowedNodeTypes {
			if !workflow.IsNodeType(t) {
				return nil, fmt.Errorf("runner.role_limits.%s.allowed_node_types: unknown node type %q (known: %s)", role, t, strings.Join(workflow.NodeTypes(), ", "))
			}
		}
	}
	s.base, s.stop = context.WithCancel(context.Background())
	st := opts.Store
	if st == nil {
		var err error
		// Dead runners' executions wait for SetResumer below: resumed, not
		// marked interrupted, when they can be.
		if st, err = store.OpenConfiguredStoreWith(s.base, cfg, store.StoreOptions{Log: s.log, DeferTakeover: true}); err != nil {
			s.stop()
			return nil, err
		}
	}
	s.store = st
	pol := opts.Policy
	if pol == nil {
		decision := cfg.Runner.PermissionDecision
		if decision == "" {
			decision = workflow.DefaultPermissionDecision
		}
		pol = &lazyPolicy{opts: policies.EngineOptions{Dir: cfg.Path(cfg.Policy.Bundle), Decision: decision}, watch: s.base, log: s.log}
	}
	s.policy = pol
	s.eventPol = opts.EventPolicy
	if s.eventPol == nil {
		decision := cfg.Runner.EventDecision
		if decision == "" {
			decision = DefaultEventDecision
		}
		s.eventPol = &lazyPolicy{opts: policies.EngineOptions{Dir: cfg.Path(cfg.Policy.Bundle), Decision: decision}, watch: s.base, log: s.log}
	}
	s.exec = workflow.NewExecutor(workflow.ExecutorOptions{
		Limits: cfg.Runner.Limits, TenantLimits: cfg.Runner.TenantLimits, RoleLimits: cfg.Runner.RoleLimits,
		HTTPAllow: cfg.Runner.HTTPAllow, Audit: st.Audit, Logger: slog.New(workflow.RedactingHandler(s.log.Handler())), Store: st, Policy: pol,
		TracerProvider: opts.TracerProvider,
	})
	s.execs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kailash_runner_executions_total", Help: "Workflow executions by outcome.",
	}, []string{"outcome"})
	s.dur = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "kailash_runner_execution_duration_seconds", Help: "Time to execute a workflow, by tenant.",
		Buckets: prometheus.ExponentialBuckets(0.00005, 4, 10),
	}, []string{"tenant"})
	s.biz = newBusinessMetrics(s.reg)
	s.leaseLost = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kailash_runner_lease_lost_writes_total", Help: "Writes of an execution refused because another runner took it over (its lease expired here).",
	}, []string{"write"})
	s.ready = s.readiness(cfg)
	s.reg.MustRegister(s.ready, s.execs, s.dur, s.leaseLost,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kailash_runner_leases_lost_total", Help: "Executions this runner ran whose lease another runner took over.",
		}, func() float64 { return float64(st.LeaseStats().Lost) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kailash_runner_executions_taken_over_total", Help: "Executions of dead runners (expired leases) this runner marked interrupted.",
		}, func() float64 { return float64(st.LeaseStats().TakenOver) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kailash_runner_executions_resumed_total", Help: "Executions of dead runners (expired leases) this runner took over and resumed from their last completed node.",
		}, func() float64 { return float64(st.LeaseStats().Resumed) }))
	// An execution whose lease another runner took over is cancelled here:
	// its result could not be stored.
	st.OnLeaseLost(func(tenant, id string) {
		if v, ok := s.running.Load(id); ok && v.(*runningExec).tenant == tenant {
			v.(*runningExec).cancel(fmt.Errorf("%w: another runner took this execution over", store.ErrLeaseLost))
		}
	})
	s.purge = newPurger(st, cfg.Runner.Retention, s.log, s.reg)
	s.log.Info("runner replica", "owner", st.Owner())
	// Cancels sent to another replica reach this one (PostgreSQL).
	if s.peers = store.PeersOf(st); s.peers != nil {
		err := s.peers.Listen(s.base, cancelChannel, s.remoteCancel)
		if err == nil {
			err = s.peers.Listen(s.base, workflowsChannel, s.remoteWorkflowChange)
		}
		if err == nil {
			// Event streams show the executions of every replica.
			s.fanout, err = newFanout(s.base, s, s.peers, st.Owner())
		}
		if err != nil {
			s.stop()
			st.Close()
			return nil, err
		}
		s.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kailash_runner_peer_events_dropped_total", Help: "Events not sent to the other runners (queue full or NOTIFY failed).",
		}, func() float64 { return float64(s.fanout.dropped.Load()) }))
	}
	ln, err := net.Listen("tcp", cfg.Runner.HTTP.String())
	if err != nil {
		s.stop()
		st.Close()
		return nil, fmt.Errorf("runner.http: %w", err)
	}
	s.ln = ln
	// Now dead runners' executions may be taken over: resumed here when
	// they can be (resume.go), else marked interrupted.
	st.SetResumer(s)
	return s, nil
}

// Addr is the bound HTTP address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves the API until ctx is cancelled, then cancels the executions
// still running, waits for them to record their end, and closes the store.
// With runner.retention it purges old records every interval meanwhile
// (retention.go).
func (s *Server) Serve(ctx context.Context) error {
	h := s.Handler()
	if s.wrap != nil {
		h = s.wrap(h)
	}
	h = telemetry.HTTPTracing(h, "runner", s.tp)
	if s.purge != nil {
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			s.purge.run(s.base)
		}()
	}
	err := telemetry.ServeHTTP(ctx, s.ln, h)
	s.shutdown()
	return err
}

func (s *Server) shutdown() {
	s.stop()
	s.resumeMu.Lock()
	s.closing = true // no execution is resumed from now on
	s.resumeMu.Unlock()
	s.inflight.Wait()
	s.bg.Wait() // no purge runs on a closed store
	if err := s.store.Close(); err != nil {
		s.log.Warn("closing the store", "err", err)
	}
}

// Handler is the runner's HTTP API plus /metrics, /healthz, /readyz and
// /openapi.json.
func (s *Server) Handler() http.Handler {
	mux := telemetry.NewMux(s.reg, s.ready)
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openAPI)
	})
	mux.HandleFunc("GET /v1/workflows", s.listWorkflows)
	mux.HandleFunc("POST /v1/workflows", s.createWorkflow)
	mux.HandleFunc("GET /v1/workflows/{name}", s.getWorkflow)
	mux.HandleFunc("PUT /v1/workflows/{name}", s.updateWorkflow)
	mux.HandleFunc("DELETE /v1/workflows/{name}", s.deleteWorkflow)
	mux.HandleFunc("POST /v1/workflows/{name}/executions", s.execute)
	mux.HandleFunc("GET /v1/workflows/{name}/executions", s.listExecutions)
	mux.HandleFunc("GET /v1/workflows/{name}/executions/{id}", s.getExecution)
	mux.HandleFunc("POST /v1/workflows/{name}/executions/{id}/cancel", s.cancelExecution)
	mux.HandleFunc("GET /v1/workflows/{name}/events", s.serveEvents)
	mux.HandleFunc("GET /v1/events", s.serveEvents)
	mux.HandleFunc("GET /v1/workflows/{name}/events/ws", s.serveEventsWS)
	mux.HandleFunc("GET /v1/events/ws", s.serveEventsWS)
	return mux
}

// caller is the identity of the request. With runner.identity_jwks it is
// the verified x-kailash-identity token's claims, and nothing else counts;
// without, the x-kailash-tenant/-user/-roles headers Envoy forwarded. No
// identity: 401.
func (s *Server) caller(w http.ResponseWriter, r *http.Request) (workflow.Caller, bool) {
	id, ok := s.identify(w, r)
	return id.Caller, ok
}

// identify is caller with the token's groups and attributes (none without
// runner.identity_jwks: the headers carry no attributes).
func (s *Server) identify(w http.ResponseWriter, r *http.Request) (identity, bool) {
	if s.verify != nil {
		tok := r.Header.Get(wire.HeaderIdentity)
		if tok == "" {
			writeError(w, http.StatusUnauthorized, "no_identity", "request carries no signed identity from the gateway")
			return identity{}, false
		}
		id, err := s.verify.verifyIdentity(r.Context(), tok)
		if err != nil {
			s.requestLog(r).Info("identity refused", "err", err, "remote", r.RemoteAddr)
			writeError(w, http.StatusUnauthorized, "bad_identity", "the identity token is not valid: "+err.Error())
			return identity{}, false
		}
		return id, true
	}
	c := workflow.Caller{Tenant: r.Header.Get(wire.HeaderTenant), User: r.Header.Get(wire.HeaderUser)}
	if roles := r.Header.Get(wire.HeaderRoles); roles != "" {
		c.Roles = strings.Split(roles, ",")
	}
	if c.Tenant == "" || c.User == "" {
		writeError(w, http.StatusUnauthorized, "no_identity", "request carries no identity from the gateway")
		return identity{Caller: c}, false
	}
	if !store.ValidTenant(c.Tenant) {
		writeError(w, http.StatusUnauthorized, "bad_identity", "the tenant is not a valid tenant id")
		return identity{Caller: c}, false
	}
	return identity{Caller: c}, true
}

// lookup finds a workflow: the tenant's own first (sw its stored current
// version), then the shared ones (sw nil).
func (s *Server) lookup(ctx context.Context, tenant, name string) (*workflow.Workflow, *store.StoredWorkflow, error) {
	sw, err := s.store.GetWorkflow(ctx, tenant, name)
	switch {
	case err == nil:
		w, err := s.compiled.compile(sw)
		return w, sw, err
	case !errors.Is(err, store.ErrNotFound):
		return nil, nil, err
	}
	if w := (*s.workflows.Load())[name]; w != nil {
		return w, nil, nil
	}
	return nil, nil, store.ErrNotFound
}

func (s *Server) listWorkflows(w http.ResponseWriter, r *http.Request) {
	c, ok := s.caller(w, r)
	if !ok {
		return
	}
	own, err := s.store.ListWorkflows(r.Context(), c.Tenant)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	shared := slices.Sorted(maps.Keys(*s.workflows.Load()))
	names := slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(own), shared...))))
	writeJSON(w, http.StatusOK, map[string]any{"workflows": names, "tenant_workflows": nonNil(own), "shared_workflows": shared})
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (s *Server) createWorkflow(w http.ResponseWriter, r *http.Request) {
	c, ok := s.caller(w, r)
	if !ok {
		return
	}
	d, def, ok := s.readDefinition(w, r, c)
	if !ok {
		return
	}
	err := s.store.PutWorkflow(r.Context(), c.Tenant, c.User, d.Name, def, s.exec.LimitsFor(c).MaxWorkflows)
	if err == nil {
		s.workflowChanged(r.Context(), c.Tenant, d.Name)
	}
	if err != nil {
		var le *workflow.LimitError
		switch {
		case errors.Is(err, store.ErrExists):
			writeError(w, http.StatusConflict, "exists", err.Error())
		case errors.As(err, &le):
			s.writeExecError(w, err, nil)
		default:
			s.internal(w, r, err)
		}
		return
	}
	body := map[string]any{"name": d.Name, "nodes": len(d.Nodes)}
	if sw, err := s.store.GetWorkflow(r.Context(), c.Tenant, d.Name); err == nil {
		w.Header().Set("ETag", etag(sw.Version))
		body["version"] = sw.Version
	}
	writeJSON(w, http.StatusCreated, body)
}

// readDefinition reads and validates a workflow definition from the
// request body, as create and update both do: parsed, compiled, within the
// caller's limits, not a shared workflow's name. It answers the request
// itself when the definition is refused.
func (s *Server) readDefinition(w http.ResponseWriter, r *http.Request, c workflow.Caller) (workflow.Definition, json.RawMessage, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", err.Error())
		return workflow.Definition{}, nil, false
	}
	d, err := workflow.ParseDefinition(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_definition", err.Error())
		return d, nil, false
	}
	wf, err := workflow.Compile(d)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid_workflow", err.Error())
		return d, nil, false
	}
	if err := s.exec.AdmitCaller(wf, c); err != nil {
		s.writeExecError(w, err, nil)
		return d, nil, false
	}
	if _, shared := (*s.workflows.Load())[d.Name]; shared {
		writeError(w, http.StatusConflict, "exists", fmt.Sprintf("workflow %q is a shared workflow", d.Name))
		return d, nil, false
	}
	def, err := json.Marshal(d)
	if err != nil {
		s.internal(w, r, err)
		return d, nil, false
	}
	return d, def, true
}

func (s *Server) deleteWorkflow(w http.ResponseWriter, r *http.Request) {
	c, ok := s.caller(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	err := s.store.DeleteWorkflow(r.Context(), c.Tenant, name)
	if err == nil {
		s.workflowChanged(r.Context(), c.Tenant, name)
	}
	if errors.Is(err, store.ErrNotFound) {
		if _, shared := (*s.workflows.Load())[name]; shared {
			writeError(w, http.StatusConflict, "shared_workflow", fmt.Sprintf("workflow %q is shared from runner.workflows and cannot be deleted", name))
			return
		}
	}
	if err != nil {
		s.notFoundOr(w, r, err, "workflow")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// execute starts an execution of the workflow with the JSON body as input.
// Synchronous by default (?timeout=2s shortens the tenant's limit); with
// ?async=true (or Prefer: respond-async) it answers 202 with the id at once.
func (s *Server) execute(w http.ResponseWriter, r *http.Request) {
	id, ok := s.identify(w, r)
	if !ok {
		return
	}
	c := id.Caller
	dept, _ := id.Attributes["department"].(string) // the business metrics' label (from the signed identity)
	name := r.PathValue("name")
	wf, sw, err := s.lookupForRun(r.Context(), c.Tenant, name)
	if err != nil {
		s.notFoundOr(w, r, err, "workflow")
		return
	}
	version := 0 // a shared workflow has no versions
	if sw != nil {
		version = sw.Version
	}
	input := map[string]any{}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", err.Error())
		return
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := strictjson.Unmarshal(body, &input); err != nil {
			writeError(w, http.StatusBadRequest, "bad_json", "request body must be a JSON object: "+err.Error())
			return
		}
	}
	var timeout time.Duration
	if t := r.URL.Query().Get("timeout"); t != "" {
		if timeout, err = time.ParseDuration(t); err != nil || timeout <= 0 {
			writeError(w, http.StatusBadRequest, "bad_timeout", "timeout must be a positive duration such as 5s")
			return
		}
	}
	async := r.URL.Query().Get("async") == "true" || strings.Contains(r.Header.Get("Prefer"), "respond-async")

	res, err := s.exec.Reserve(wf, c)
	if err != nil {
		s.execs.WithLabelValues(limitLabel(err)).Inc()
		s.writeExecError(w, err, nil)
		return
	}
	// The store counts the tenant's and the caller's roles' running
	// executions on every runner.
	rec := &store.ExecutionRecord{ID: workflow.NewID(), Workflow: name, WorkflowVersion: version, Status: store.StatusRunning, Tenant: c.Tenant, User: c.User,
		Input: input, CreatedAt: store.Now(), MaxRunning: s.exec.Limits(c.Tenant).MaxConcurrentExecutions,
		Roles: c.Roles, RoleLimits: s.exec.RoleConcurrency(c)}
	// An asynchronous execution's id is acknowledged (202) once its start
	// is committed. A synchronous one acknowledges nothing before its end:
	// its start and node results ride in the group commit (store.Deferred)
	// and its answer waits for the end's commit (docs/deploy.md,
	// "Durability").
	sctx := r.Context()
	if !async {
		sctx = store.Deferred(sctx)
	}
	if err := s.store.StartExecution(sctx, rec); err != nil {
		res.Release()
		var le *workflow.LimitError
		if errors.As(err, &le) {
			s.execs.WithLabelValues(limitLabel(err)).Inc()
			s.writeExecError(w, err, nil)
			return
		}
		s.internal(w, r, err)
		return
	}
	// A synchronous execution ends with its request; an asynchronous one
	// with the server. Either can be cancelled through the API.
	parent := r.Context()
	if async {
		// The execution outlives the request; its node spans stay in the
		// request's trace.
		parent = trace.ContextWithSpanContext(s.base, trace.SpanContextFromContext(r.Context()))
	}
	ctx, cancel := context.WithCancelCause(parent)
	s.running.Store(rec.ID, &runningExec{tenant: c.Tenant, workflow: name, user: c.User, cancel: cancel})
	s.inflight.Add(1)
	run := func() ranExecution {
		defer s.inflight.Done()
		defer s.running.Delete(rec.ID)
		defer cancel(nil)
		return s.run(ctx, s.requestLog(r), dept, res, wf, rec, timeout, !async, nil)
	}
	if async {
		go run()
		w.Header().Set("Location", fmt.Sprintf("/v1/workflows/%s/executions/%s", name, rec.ID))
		writeJSON(w, http.StatusAccepted, map[string]any{"execution_id": rec.ID, "workflow": name, "status": store.StatusRunning, "tenant": c.Tenant, "user": c.User})
		return
	}
	done := run()
	if done.storeErr != nil {
		// Not acknowledged: the result is not stored.
		s.internal(w, r, fmt.Errorf("execution %s ended %s but its end was not stored: %w", rec.ID, done.Status, done.storeErr))
		return
	}
	if done.Status != store.StatusCompleted {
		s.writeExecError(w, errors.New(done.Error), done.ExecutionRecord)
		return
	}
	nodes := map[string]map[string]any{}
	for _, n := range done.Nodes {
		nodes[n.Node] = n.Output
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"execution_id": rec.ID,
		"workflow":     name,
		"status":       done.Status,
		"tenant":       c.Tenant,
		"user":         c.User,
		"output":       done.Output,
		"nodes":        nodes,
	})
}

// ranExecution is an execution's record once run, and why its end was not
// stored, if it was not.
type ranExecution struct {
	*store.ExecutionRecord
	storeErr error
}

// run executes and records: the start event, each node's result as it
// ends, and the outcome. The records are written even after cancellation.
// With deferNodes the node results are queued to the store's group commit
// rather than waited for (a synchronous execution: nothing of it is
// acknowledged before its end, which is committed after them).
//
// A resumed execution (resumed: the outputs of the nodes that completed on
// the dead runner) runs only the other nodes and starts with
// execution.resumed.
func (s *Server) run(ctx context.Context, lg *slog.Logger, dept string, res *workflow.Reservation, wf *workflow.Workflow, rec *store.ExecutionRecord, timeout time.Duration,
	deferNodes bool, resumed map[string]map[string]any) ranExecution {
	wctx := context.WithoutCancel(ctx)
	ev := func(typ string) Event {
		return Event{Type: typ, Tenant: rec.Tenant, Workflow: rec.Workflow, Execution: rec.ID, At: time.Now().UTC(), Policy: wf.Def.Events}
	}
	if resumed != nil {
		s.publish(ev("execution.resumed"))
	} else {
		s.publish(ev("execution.started"))
	}
	var mu sync.Mutex // guards rec.Nodes
	start := time.Now()
	result, err := res.Run(ctx, rec.Input, workflow.RunOptions{ID: rec.ID, Timeout: timeout, Completed: resumed, OnNode: func(ctx context.Context, nr workflow.NodeRun) {
		nctx := ctx
		if deferNodes {
			nctx = store.Deferred(ctx)
		}
		if err := s.store.RecordNode(nctx, rec.Tenant, rec.ID, nr); errors.Is(err, store.ErrLeaseLost) {
			s.leaseLost.WithLabelValues("node").Inc()
			lg.Error("node result not stored: another runner owns the execution", "execution", rec.ID, "node", nr.Node, "err", err)
		} else if err != nil {
			lg.Warn("recording a node result", "execution", rec.ID, "node", nr.Node, "err", err)
		}
		mu.Lock()
		rec.Nodes = append(rec.Nodes, nr)
		mu.Unlock()
		e := ev("node.finished")
		if nr.Status == "failed" {
			e.Type = "node.failed"
		}
		e.Node, e.Status, e.Error = nr.Node, nr.Status, nr.Error
		s.publish(e)
	}})
	took := time.Since(start)
	s.dur.WithLabelValues(rec.Tenant).Observe(took.Seconds())
	s.biz.observe(rec.Tenant, dept, wf, took, err == nil)
	rec.Status = store.StatusCompleted
	if err != nil {
		rec.Status, rec.Error = statusOf(err), err.Error()
		lg.Warn("execution failed", "workflow", rec.Workflow, "execution", rec.ID, "tenant", rec.Tenant, "status", rec.Status, "err", err)
	} else {
		rec.Output = result.Output
	}
	s.execs.WithLabelValues(rec.Status).Inc()
	serr := s.store.FinishExecution(wctx, rec.Tenant, rec.ID, rec.Status, rec.Output, rec.Error)
	if err := serr; errors.Is(err, store.ErrLeaseLost) {
		s.leaseLost.WithLabelValues("finish").Inc()
		lg.Error("execution result not stored: this runner's lease expired and another runner took the execution over",
			"workflow", rec.Workflow, "execution", rec.ID, "tenant", rec.Tenant, "status", rec.Status, "err", err)
	} else if err != nil {
		lg.Error("recording an execution's end", "execution", rec.ID, "err", err)
	}
	e := ev("execution.completed")
	if rec.Status != store.StatusCompleted {
		e.Type = "execution.failed"
	}
	e.Status, e.Error = rec.Status, rec.Error
	s.publish(e)
	return ranExecution{rec, serr}
}

func statusOf(err error) string {
	switch {
	case errors.Is(err, workflow.ErrCancelled):
		return store.StatusCancelled
	case errors.Is(err, workflow.ErrTimeout):
		return store.StatusTimedOut
	}
	return store.StatusFailed
}

func limitLabel(err error) string {
	var le *workflow.LimitError
	if errors.As(err, &le) {
		return "limit_" + le.Limit
	}
	return "error"
}

func (s *Server) listExecutions(w http.ResponseWriter, r *http.Request) {
	c, ok := s.caller(w, r)
	if !ok {
		return
	}
	list, err := s.store.ListExecutions(r.Context(), c.Tenant, r.PathValue("name"), 100)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"executions": list})
}

func (s *Server) getExecution(w http.ResponseWriter, r *http.Request) {
	c, ok := s.caller(w, r)
	if !ok {
		return
	}
	e, err := s.store.GetExecution(r.Context(), c.Tenant, r.PathValue("id"))
	if err == nil && e.Workflow != r.PathValue("name") {
		err = store.ErrNotFound
	}
	if err != nil {
		s.notFoundOr(w, r, err, "execution")
		return
	}
	writeJSON(w, http.StatusOK, e)
}

// CancelAnyPermission lets a caller cancel executions others started (of
// the workflows its other permissions reach). The starter of an execution
// may always cancel it; anyone else needs this permission in the runner's
// permission decision (runner.permission_decision, by default the shipped
// bundle's granted set, where admin holds it).
const CancelAnyPermission = "workflow:cancel_any"

// cancelExecution cancels a running execution. It must be of the caller's
// tenant and of the workflow the path names: otherwise it is answered as
// one that does not exist (404). Its starter may cancel it; another caller
// needs CancelAnyPermission (403 without it; the decision failing is 503).
func (s *Server) cancelExecution(w http.ResponseWriter, r *http.Request) {
	c, ok := s.caller(w, r)
	if !ok {
		return
	}
	id, name := r.PathValue("id"), r.PathValue("name")
	var re *runningExec
	if v, ok := s.running.Load(id); ok {
		if x := v.(*runningExec); x.tenant == c.Tenant && x.workflow == name {
			re = x
		}
	}
	var remote *store.ExecutionRecord
	if re == nil {
		// Not running here: say whether it exists (in this tenant and
		// workflow) at all, and whether another replica runs it.
		e, err := s.store.GetExecution(r.Context(), c.Tenant, id)
		if err != nil || e.Workflow != name {
			writeError(w, http.StatusNotFound, "not_found", "no such execution")
			return
		}
		if e.Status != store.StatusRunning || s.peers == nil {
			writeJSON(w, http.StatusConflict, map[string]any{"error": "not_running", "message": "the execution is not running", "status": e.Status})
			return
		}
		remote, re = e, &runningExec{tenant: c.Tenant, workflow: name, user: e.User}
	}
	if re.user != c.User {
		allowed, err := s.granted(r.Context(), c, CancelAnyPermission, name, id)
		if err != nil {
			s.requestLog(r).Warn("cancel: the permission decision failed; refusing", "tenant", c.Tenant, "user", c.User, "execution", id, "err", err)
			writeError(w, http.StatusServiceUnavailable, "policy_error", "the runner could not decide whether you may cancel this execution")
			return
		}
		if !allowed {
			writeError(w, http.StatusForbidden, "forbidden", "only the user who started the execution, or a caller granted "+CancelAnyPermission+", may cancel it")
			return
		}
	}
	if remote != nil {
		// Decided here; the owning replica cancels it.
		msg, _ := json.Marshal(remoteCancel{Tenant: c.Tenant, Workflow: name, ID: id, By: c.User})
		if err := s.peers.Notify(r.Context(), cancelChannel, string(msg)); err != nil {
			s.internal(w, r, err)
			return
		}
		s.requestLog(r).Info("execution cancel sent to the runner running it", "tenant", c.Tenant, "workflow", name, "execution", id, "by", c.User, "started_by", re.user)
		writeJSON(w, http.StatusAccepted, map[string]any{"execution_id": id, "status": "cancelling"})
		return
	}
	s.requestLog(r).Info("execution cancelled", "tenant", c.Tenant, "workflow", name, "execution", id, "by", c.User, "started_by", re.user)
	re.cancel(fmt.Errorf("%w by %s", workflow.ErrCancelled, c.User))
	writeJSON(w, http.StatusAccepted, map[string]any{"execution_id": id, "status": "cancelling"})
}

// publish delivers e to this replica's subscribers and the other
// replicas'.
func (s *Server) publish(e Event) {
	s.events.publish(e)
	if s.fanout != nil {
		s.fanout.send(e)
	}
}

// cancelChannel carries cancels between runner replicas (LISTEN/NOTIFY).
const cancelChannel = "kailash_runner_cancel"

// remoteCancel is a cancel another replica authorized.
type remoteCancel struct {
	Tenant   string `json:"tenant"`
	Workflow string `json:"workflow"`
	ID       string `json:"id"`
	By       string `json:"by"`
}

// remoteCancel cancels an execution running here that another replica was
// asked (and allowed) to cancel; others ignore it.
func (s *Server) remoteCancel(payload string) {
	var m remoteCancel
	if err := json.Unmarshal([]byte(payload), &m); err != nil {
		s.log.Warn("runner: a cancel from another runner is not valid JSON; ignored", "err", err)
		return
	}
	v, ok := s.running.Load(m.ID)
	if !ok {
		return
	}
	if x := v.(*runningExec); x.tenant == m.Tenant && x.workflow == m.Workflow {
		s.log.Info("execution cancelled (through another runner)", "tenant", m.Tenant, "workflow", m.Workflow, "execution", m.ID, "by", m.By, "started_by", x.user)
		x.cancel(fmt.Errorf("%w by %s", workflow.ErrCancelled, m.By))
	}
}

// granted asks the runner's permission decision whether c holds
// permission, with the input permission_check sends.
func (s *Server) granted(ctx context.Context, c workflow.Caller, permission, wfName, execution string) (bool, error) {
	v, err := ast.InterfaceToValue(map[string]any{
		"version":    map[string]any{wire.PolicyInputKey: wire.PolicyInputVersion},
		"identity":   map[string]any{"sub": c.User, "tenant": c.Tenant, "roles": anySlice(c.Roles)},
		"tenant":     map[string]any{"id": c.Tenant},
		"permission": permission,
		"resource":   "",
		"workflow":   map[string]any{"name": wfName, "execution_id": execution},
	})
	if err != nil {
		return false, err
	}
	dec, err := s.policy.Eval(ctx, v)
	if err != nil {
		return false, fmt.Errorf("policy: %w", err)
	}
	return workflow.DecisionAllows(dec, permission)
}

// writeExecError maps an execution error onto a status: a concurrency
// limit 429, another limit 403, a timeout 504, a cancellation 409, a node
// failure 422.
func (s *Server) writeExecError(w http.ResponseWriter, err error, rec *store.ExecutionRecord) {
	code, kind := http.StatusUnprocessableEntity, "execution_failed"
	var le *workflow.LimitError
	status := ""
	if rec != nil {
		status = rec.Status
	}
	switch {
	case errors.As(err, &le) && le.Limit == "max_concurrent_executions":
		code, kind = http.StatusTooManyRequests, "limit_exceeded"
		w.Header().Set("Retry-After", "1")
	case errors.As(err, &le):
		code, kind = http.StatusForbidden, "limit_exceeded"
	case status == store.StatusTimedOut || (rec == nil && errors.Is(err, workflow.ErrTimeout)):
		code, kind = http.StatusGatewayTimeout, "execution_timed_out"
	case status == store.StatusCancelled || (rec == nil && errors.Is(err, workflow.ErrCancelled)):
		code, kind = http.StatusConflict, "execution_cancelled"
	}
	body := map[string]any{"error": kind, "message": err.Error()}
	if le != nil {
		body["limit"] = le.Limit
	}
	if rec != nil {
		body["execution_id"], body["status"] = rec.ID, rec.Status
	}
	writeJSON(w, code, body)
}

func (s *Server) notFoundOr(w http.ResponseWriter, r *http.Request, err error, what string) {
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", "no such "+what)
		return
	}
	s.internal(w, r, err)
}

// requestLog is the server's logger with the request's Envoy x-request-id
// and trace id, which join its lines to the access log and the trace.
func (s *Server) requestLog(r *http.Request) *slog.Logger {
	return s.log.With("request_id", r.Header.Get("X-Request-Id"), "trace_id", telemetry.TraceID(r.Context()))
}

func (s *Server) internal(w http.ResponseWriter, r *http.Request, err error) {
	s.requestLog(r).Error("runner request failed", "err", err)
	writeError(w, http.StatusInternalServerError, "internal", "the runner could not complete the request")
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, kind, msg string) {
	writeJSON(w, code, map[string]string{"error": kind, "message": msg})
}

// lazyPolicy builds its engine on first use, so a runner whose workflows
// never check a permission never compiles the bundle. A failed build fails
// every check (closed) and is retried no sooner than the next call. With
// watch set, the built engine follows changes of the bundle until watch
// ends (policies.Engine.Watch).
type lazyPolicy struct {
	opts  policies.EngineOptions
	watch context.Context
	log   *slog.Logger

	mu sync.Mutex // guards e
	e  *policies.Engine
}

func (l *lazyPolicy) Eval(ctx context.Context, input ast.Value) (any, error) {
	l.mu.Lock()
	e := l.e
	if e == nil {
		var err error
		if e, err = policies.NewEngine(ctx, l.opts); err != nil {
			l.mu.Unlock()
			return nil, err
		}
		l.e = e
		if l.watch != nil {
			go l.follow(e)
		}
	}
	l.mu.Unlock()
	return e.Eval(ctx, input)
}

func (l *lazyPolicy) follow(e *policies.Engine) {
	err := e.Watch(l.watch, 200*time.Millisecond, func(err error) {
		if err != nil {
			l.log.Error("runner policy bundle rejected; the last good version keeps serving", "decision", e.Decision(), "source", e.Source(), "err", err)
			return
		}
		l.log.Info("runner policy bundle reloaded", "decision", e.Decision(), "source", e.Source(), "revision", e.Revision())
	})
	if err != nil {
		l.log.Warn("runner policy bundle not watched; changes need a restart", "decision", e.Decision(), "source", e.Source(), "err", err)
	}
}

// Revision is the loaded bundle's revision, "" before the first Eval.
func (l *lazyPolicy) Revision() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.e == nil {
		return ""
	}
	return l.e.Revision()
}

// compileCache keeps compiled tenant workflows by the digest of their
// stored definition, so an execution does not recompile (Starlark, jq) what
// an earlier one compiled. A changed definition has another digest; the
// cache is emptied when it grows past maxCompiled.
type compileCache struct {
	m sync.Map // digest -> *workflow.Workflow
	n atomic.Int64
}

const maxCompiled = 4096

func (c *compileCache) compile(sw *store.StoredWorkflow) (*workflow.Workflow, error) {
	if v, ok := c.m.Load(sw.Digest); ok && sw.Digest != "" {
		return v.(*workflow.Workflow), nil
	}
	var d workflow.Definition
	if err := json.Unmarshal(sw.Definition, &d); err != nil {
		return nil, err
	}
	w, err := workflow.Compile(d)
	if err != nil || sw.Digest == "" {
		return w, err
	}
	if c.n.Add(1) > maxCompiled {
		c.m.Clear()
		c.n.Store(1)
	}
	c.m.Store(sw.Digest, w)
	return w, nil
}
