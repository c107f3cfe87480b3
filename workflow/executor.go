package workflow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/telemetry"
	"github.com/kailash-gw/kailash/workflow/store"
)

// Default limits, used where runner.limits leaves a field zero. The node and
// concurrency numbers are the seed's (max_workflow_nodes 50,
// max_concurrent_workflows 20).
var defaultLimits = config.RunnerLimits{
	MaxWorkflows:            100,
	MaxNodes:                50,
	MaxExecutionTime:        30 * time.Second,
	NodeTimeout:             10 * time.Second,
	MaxConcurrentExecutions: 20,
	MaxParallelNodes:        8,
	CodeMaxSteps:            1_000_000,
	CodeMaxMemory:           64 << 20,
	BatchMaxItems:           10_000,
}

// inherit fills the zero fields of l from base.
func inherit(l, base config.RunnerLimits) config.RunnerLimits {
	pick := func(a, b int) int {
		if a == 0 {
			return b
		}
		return a
	}
	if l.MaxExecutionTime == 0 {
		l.MaxExecutionTime = base.MaxExecutionTime
	}
	if l.NodeTimeout == 0 {
		l.NodeTimeout = base.NodeTimeout
	}
	if l.CodeMaxSteps == 0 {
		l.CodeMaxSteps = base.CodeMaxSteps
	}
	if l.CodeMaxMemory == 0 {
		l.CodeMaxMemory = base.CodeMaxMemory
	}
	if len(l.AllowedNodeTypes) == 0 {
		l.AllowedNodeTypes = base.AllowedNodeTypes
	}
	l.MaxWorkflows = pick(l.MaxWorkflows, base.MaxWorkflows)
	l.MaxNodes = pick(l.MaxNodes, base.MaxNodes)
	l.MaxConcurrentExecutions = pick(l.MaxConcurrentExecutions, base.MaxConcurrentExecutions)
	l.MaxParallelNodes = pick(l.MaxParallelNodes, base.MaxParallelNodes)
	l.BatchMaxItems = pick(l.BatchMaxItems, base.BatchMaxItems)
	return l
}

// Errors an execution ends with; test them with errors.Is / errors.As.
var (
	// ErrCancelled: the execution was cancelled (API call or the caller went away).
	ErrCancelled = errors.New("execution cancelled")
	// ErrTimeout: the execution or one node ran out of time.
	ErrTimeout = errors.New("timed out")
)

// LimitError is a tenant limit hit (store.LimitError: the store enforces
// max_workflows, the executor the other limits).
type LimitError = store.LimitError

// NodeError is a node's failure.
type NodeError struct {
	Node, Type string
	Err        error
}

func (e *NodeError) Error() string { return fmt.Sprintf("node %q (%s): %v", e.Node, e.Type, e.Err) }
func (e *NodeError) Unwrap() error { return e.Err }

// Caller is who the execution runs for (from the identity ext_authz attached).
type Caller struct {
	Tenant string   `json:"tenant"`
	User   string   `json:"user"`
	Roles  []string `json:"roles"`
	// Clearance is the caller's clearance attribute (public, internal,
	// confidential, secret) from the identity token; "" when not known.
	Clearance string `json:"clearance,omitempty"`
}

// NodeRun is one node's outcome, reported as soon as the node ends and
// stored as it is.
type NodeRun = store.NodeRun

// Result of one execution.
type Result struct {
	Output map[string]any            `json:"output"`
	Nodes  map[string]map[string]any `json:"nodes"`
}

// RunOptions tune one execution.
type RunOptions struct {
	// ID identifies the execution (in lineage and audit records).
	ID string
	// Timeout, when positive and shorter than the tenant's
	// max_execution_time, bounds this execution.
	Timeout time.Duration
	// OnNode, when set, is called after each node ends, from the node's
	// goroutine (so concurrently); its ctx outlives cancellation.
	OnNode func(ctx context.Context, r NodeRun)
	// Completed are the outputs of nodes that already ran (a resumed
	// execution): they do not run again, their outputs feed the others,
	// and OnNode is not called for them.
	Completed map[string]map[string]any
}

// AuditRecord is what the audit_log node records.
type AuditRecord = store.AuditRecord

// ExecutorOptions configure an Executor.
type ExecutorOptions struct {
	Limits       config.RunnerLimits
	TenantLimits map[string]config.RunnerLimits
	// RoleLimits apply to callers with the role, on top of their tenant's:
	// the stricter value wins (see LimitsFor).
	RoleLimits map[string]config.RunnerLimits
	// HTTPAllow is the hosts the http node may call ("host" or "host:port").
	HTTPAllow []string
	// Audit stores audit_log records; nil logs them only.
	Audit  func(ctx context.Context, r AuditRecord) error
	Logger *slog.Logger
	// store.Store runs the sql node's statements in the tenant's own database;
	// nil refuses sql nodes at run time.
	Store store.Store
	// Policy answers permission_check nodes; nil fails them (closed).
	Policy PolicyEvaluator
	// TracerProvider makes each node a span, child of the execution's
	// context, and the http node's calls carry traceparent; nil is off.
	TracerProvider trace.TracerProvider
}

// Executor runs compiled workflows within per-tenant limits. It is safe for
// concurrent use.
type Executor struct {
	limits  config.RunnerLimits
	tenants map[string]config.RunnerLimits
	allow   map[string]bool
	client  *http.Client
	roles   map[string]config.RunnerLimits // as configured: zero fields set nothing
	audit   func(ctx context.Context, r AuditRecord) error
	log     *slog.Logger
	// store runs the sql node's statements; policy answers permission_check.
	store  store.Store
	policy PolicyEvaluator
	tracer trace.Tracer // nil: tracing off

	mu          sync.Mutex
	running     map[string]int    // guarded by mu: executions in flight per tenant
	roleRunning map[[2]string]int // guarded by mu: per (tenant, role) with a role limit
}

// NewExecutor returns an executor; zero limits take the defaults.
func NewExecutor(o ExecutorOptions) *Executor {
	x := &Executor{
		limits:  inherit(o.Limits, defaultLimits),
		tenants: map[string]config.RunnerLimits{},
		allow:   map[string]bool{},
		audit:   o.Audit,
		log:     o.Logger,
		store:   o.Store,
		policy:  o.Policy,
		running: map[string]int{},
		roles:   map[string]config.RunnerLimits{},

		roleRunning: map[[2]string]int{},
	}
	maps.Copy(x.roles, o.RoleLimits)
	if x.log == nil {
		x.log = slog.Default()
	}
	for id, l := range o.TenantLimits {
		x.tenants[id] = inherit(l, x.limits)
	}
	for _, h := range o.HTTPAllow {
		x.allow[strings.ToLower(h)] = true
	}
	x.client = newHTTPClient(x.allowed)
	if o.TracerProvider != nil {
		x.tracer = o.TracerProvider.Tracer("github.com/kailash-gw/kailash/workflow")
		x.client.Transport = telemetry.HTTPClientTracing(http.DefaultTransport, o.TracerProvider)
	}
	return x
}

// Limits are the effective limits of a tenant.
func (x *Executor) Limits(tenant string) config.RunnerLimits {
	if l, ok := x.tenants[tenant]; ok {
		return l
	}
	return x.limits
}

// LimitsFor are the effective limits of a caller: its tenant's, tightened
// by the role_limits of each role it holds. For every number the smallest
// set value wins; allowed_node_types is the intersection of the lists set.
func (x *Executor) LimitsFor(c Caller) config.RunnerLimits {
	l := x.Limits(c.Tenant)
	for _, r := range c.Roles {
		if rl, ok := x.roles[r]; ok {
			l = stricter(l, rl)
		}
	}
	return l
}

// stricter tightens l by every field r sets.
func stricter(l, r config.RunnerLimits) config.RunnerLimits {
	minInt := func(a, b int) int {
		if b > 0 && b < a {
			return b
		}
		return a
	}
	if r.MaxExecutionTime > 0 && r.MaxExecutionTime < l.MaxExecutionTime {
		l.MaxExecutionTime = r.MaxExecutionTime
	}
	if r.NodeTimeout > 0 && r.NodeTimeout < l.NodeTimeout {
		l.NodeTimeout = r.NodeTimeout
	}
	if r.CodeMaxSteps > 0 && r.CodeMaxSteps < l.CodeMaxSteps {
		l.CodeMaxSteps = r.CodeMaxSteps
	}
	if r.CodeMaxMemory > 0 && r.CodeMaxMemory < l.CodeMaxMemory {
		l.CodeMaxMemory = r.CodeMaxMemory
	}
	l.MaxWorkflows = minInt(l.MaxWorkflows, r.MaxWorkflows)
	l.MaxNodes = minInt(l.MaxNodes, r.MaxNodes)
	l.MaxConcurrentExecutions = minInt(l.MaxConcurrentExecutions, r.MaxConcurrentExecutions)
	l.MaxParallelNodes = minInt(l.MaxParallelNodes, r.MaxParallelNodes)
	l.BatchMaxItems = minInt(l.BatchMaxItems, r.BatchMaxItems)
	if len(r.AllowedNodeTypes) > 0 {
		if len(l.AllowedNodeTypes) == 0 {
			l.AllowedNodeTypes = slices.Clone(r.AllowedNodeTypes)
		} else {
			var both []string
			for _, t := range l.AllowedNodeTypes {
				if slices.Contains(r.AllowedNodeTypes, t) {
					both = append(both, t)
				}
			}
			if both == nil {
				both = []string{} // nothing is allowed, which is not "everything"
			}
			l.AllowedNodeTypes = both
		}
	}
	return l
}

// Admit checks a workflow against the tenant's static limits: node count
// and allowed node types.
func (x *Executor) Admit(w *Workflow, tenant string) error {
	return x.admit(w, tenant, x.Limits(tenant))
}

// AdmitCaller is Admit with the caller's limits (its roles' included).
func (x *Executor) AdmitCaller(w *Workflow, c Caller) error {
	return x.admit(w, c.Tenant, x.LimitsFor(c))
}

func (x *Executor) admit(w *Workflow, tenant string, l config.RunnerLimits) error {
	if len(w.nodes) > l.MaxNodes {
		return &LimitError{Tenant: tenant, Limit: "max_nodes", Msg: fmt.Sprintf("workflow %q has %d nodes, more than the %d allowed", w.Def.Name, len(w.nodes), l.MaxNodes)}
	}
	if l.AllowedNodeTypes != nil {
		for _, n := range w.nodes {
			types := []string{n.typ}
			if b, ok := n.prep.(*batchPrep); ok {
				types = append(types, b.step.typ)
			}
			for _, t := range types {
				if !slices.Contains(l.AllowedNodeTypes, t) {
					return &LimitError{Tenant: tenant, Limit: "allowed_node_types", Msg: fmt.Sprintf("node %q: type %q is not allowed (allowed: %s)", n.id, t, strings.Join(l.AllowedNodeTypes, ", "))}
				}
			}
		}
	}
	return nil
}

// Reservation is an admitted execution holding one of its tenant's
// concurrent-execution slots until Run returns or Release is called.
type Reservation struct {
	x       *Executor
	w       *Workflow
	c       Caller
	limits  config.RunnerLimits
	roles   [][2]string // the (tenant, role) counters it holds
	release sync.Once
}

// Reserve admits w for c and takes a concurrency slot; it never waits: a
// full tenant gets a LimitError at once.
//
// The tenant's max_concurrent_executions counts all of the tenant's
// executions; a role's counts the executions its holders started in the
// tenant.
func (x *Executor) Reserve(w *Workflow, c Caller) (*Reservation, error) {
	l := x.LimitsFor(c)
	if err := x.admit(w, c.Tenant, l); err != nil {
		return nil, err
	}
	tl := x.Limits(c.Tenant)
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.running[c.Tenant] >= tl.MaxConcurrentExecutions {
		return nil, &LimitError{Tenant: c.Tenant, Limit: "max_concurrent_executions", Msg: fmt.Sprintf("%d executions are already running", x.running[c.Tenant])}
	}
	var roles [][2]string
	for _, r := range c.Roles {
		rl, ok := x.roles[r]
		if !ok || rl.MaxConcurrentExecutions == 0 {
			continue
		}
		k := [2]string{c.Tenant, r}
		if slices.Contains(roles, k) {
			continue
		}
		if x.roleRunning[k] >= rl.MaxConcurrentExecutions {
			return nil, &LimitError{Tenant: c.Tenant, Limit: "max_concurrent_executions", Msg: fmt.Sprintf("role %s: %d executions are already running (role limit %d)", r, x.roleRunning[k], rl.MaxConcurrentExecutions)}
		}
		roles = append(roles, k)
	}
	x.running[c.Tenant]++
	for _, k := range roles {
		x.roleRunning[k]++
	}
	return &Reservation{x: x, w: w, c: c, limits: l, roles: roles}, nil
}

// ReserveResumed takes the slots of an execution resumed from a dead
// runner: it is running already (the store counted it when it started), so
// it is counted here and never refused.
func (x *Executor) ReserveResumed(w *Workflow, c Caller) *Reservation {
	x.mu.Lock()
	defer x.mu.Unlock()
	var roles [][2]string
	for r, n := range x.RoleConcurrency(c) {
		if n > 0 {
			roles = append(roles, [2]string{c.Tenant, r})
		}
	}
	x.running[c.Tenant]++
	for _, k := range roles {
		x.roleRunning[k]++
	}
	return &Reservation{x: x, w: w, c: c, limits: x.LimitsFor(c), roles: roles}
}

// RoleConcurrency is, for each of c's roles with a role limit on
// concurrent executions, that limit (the store counts them across
// runners; nil when none).
func (x *Executor) RoleConcurrency(c Caller) map[string]int {
	var m map[string]int
	for _, r := range c.Roles {
		if rl, ok := x.roles[r]; ok && rl.MaxConcurrentExecutions > 0 {
			if m == nil {
				m = map[string]int{}
			}
			m[r] = rl.MaxConcurrentExecutions
		}
	}
	return m
}

// Release gives the slot back; it is idempotent.
func (r *Reservation) Release() {
	r.release.Do(func() {
		r.x.mu.Lock()
		defer r.x.mu.Unlock()
		if r.x.running[r.c.Tenant]--; r.x.running[r.c.Tenant] <= 0 {
			delete(r.x.running, r.c.Tenant)
		}
		for _, k := range r.roles {
			if r.x.roleRunning[k]--; r.x.roleRunning[k] <= 0 {
				delete(r.x.roleRunning, k)
			}
		}
	})
}

// Running is the number of executions in flight for a tenant.
func (x *Executor) Running(tenant string) int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.running[tenant]
}

// Run reserves and runs w.
func (x *Executor) Run(ctx context.Context, w *Workflow, input map[string]any, c Caller, o RunOptions) (*Result, error) {
	r, err := x.Reserve(w, c)
	if err != nil {
		return nil, err
	}
	return r.Run(ctx, input, o)
}

// Execute runs the workflow with the default limits (tests, tools).
func (w *Workflow) Execute(ctx context.Context, input map[string]any, c Caller) (*Result, error) {
	return NewExecutor(ExecutorOptions{}).Run(ctx, w, input, c, RunOptions{})
}

// execution is the state one Run shares with its nodes.
type execution struct {
	id     string
	w      *Workflow
	c      Caller
	limits config.RunnerLimits
	input  map[string]any
	outs   []map[string]any // outs[i] is written once, before done[i] is closed
	done   []chan struct{}
}

// Run executes the workflow: every node starts as soon as all its inputs
// are ready, so independent branches run in parallel (at most
// max_parallel_nodes at once). The first failure cancels the rest. The
// execution is bounded by max_execution_time (or o.Timeout if shorter),
// each node by node_timeout (or its own shorter timeout). It releases the
// reservation when it returns.
func (r *Reservation) Run(ctx context.Context, input map[string]any, o RunOptions) (*Result, error) {
	defer r.Release()
	w, l := r.w, r.limits
	limit, what := l.MaxExecutionTime, "max_execution_time"
	if o.Timeout > 0 && o.Timeout < limit {
		limit, what = o.Timeout, "requested timeout"
	}
	ctx, cancel := context.WithTimeoutCause(ctx, limit, fmt.Errorf("execution %w after %s (%s)", ErrTimeout, limit, what))
	defer cancel()
	if input == nil {
		input = map[string]any{}
	}
	ex := &execution{id: o.ID, w: w, c: r.c, limits: l, input: input,
		outs: make([]map[string]any, len(w.nodes)), done: make([]chan struct{}, len(w.nodes))}
	for i := range ex.done {
		ex.done[i] = make(chan struct{})
	}
	for id, out := range o.Completed {
		if i, ok := w.index[id]; ok {
			if out == nil {
				out = map[string]any{}
			}
			ex.outs[i] = out
			close(ex.done[i])
		}
	}
	sem := make(chan struct{}, max(1, l.MaxParallelNodes))
	g, gctx := errgroup.WithContext(ctx)
	for _, i := range w.order {
		if _, ok := o.Completed[w.nodes[i].id]; ok {
			continue
		}
		g.Go(func() error {
			n := w.nodes[i]
			for _, e := range n.in {
				select {
				case <-ex.done[e.from]:
				case <-gctx.Done():
					return nil // skipped: whoever failed reports why
				}
			}
			select {
			case sem <- struct{}{}:
			case <-gctx.Done():
				return nil
			}
			defer func() { <-sem }()
			out, err := r.x.runNode(gctx, ex, n, o.OnNode)
			if err != nil {
				return err
			}
			ex.outs[i] = out
			close(ex.done[i])
			return nil
		})
	}
	err := g.Wait()
	if ctx.Err() != nil {
		// The execution's own deadline or its caller's cancellation wins over
		// the node error it caused.
		return nil, execCause(ctx)
	}
	if err != nil {
		return nil, err
	}
	res := &Result{Nodes: make(map[string]map[string]any, len(w.nodes))}
	for i, n := range w.nodes {
		res.Nodes[n.id] = ex.outs[i]
	}
	if len(w.output) == 1 {
		res.Output = ex.outs[w.output[0]]
	} else {
		res.Output = map[string]any{}
		for _, i := range w.output {
			res.Output[w.nodes[i].id] = ex.outs[i]
		}
	}
	return res, nil
}

// execCause explains why ctx ended: a timeout cause, or ErrCancelled.
func execCause(ctx context.Context) error {
	cause := context.Cause(ctx)
	if errors.Is(cause, ErrTimeout) || errors.Is(cause, ErrCancelled) {
		return cause
	}
	if errors.Is(cause, context.DeadlineExceeded) {
		return fmt.Errorf("execution %w (deadline of the request)", ErrTimeout)
	}
	return fmt.Errorf("%w: %v", ErrCancelled, cause)
}

// runNode assembles a node's input from its connections, runs it under its
// timeout and reports the outcome.
func (x *Executor) runNode(ctx context.Context, ex *execution, n *cnode, onNode func(context.Context, NodeRun)) (map[string]any, error) {
	run := NodeRun{Node: n.id, Type: n.typ, Started: time.Now()}
	var span trace.Span
	if x.tracer != nil {
		ctx, span = x.tracer.Start(ctx, "node "+n.id, trace.WithAttributes(
			attribute.String("kailash.workflow", ex.w.Def.Name), attribute.String("kailash.execution_id", ex.id),
			attribute.String("kailash.node.id", n.id), attribute.String("kailash.node.type", n.typ)))
	}
	out, err := x.runNodeInner(ctx, ex, n)
	run.Finished = time.Now()
	if err != nil {
		err = &NodeError{Node: n.id, Type: n.typ, Err: err}
		run.Status, run.Error = "failed", err.Error()
	} else {
		run.Status, run.Output = "completed", out
	}
	if span != nil {
		if err != nil {
			span.SetStatus(otelcodes.Error, run.Error)
		}
		span.End()
	}
	if onNode != nil {
		onNode(context.WithoutCancel(ctx), run)
	}
	return out, err
}

func (x *Executor) runNodeInner(ctx context.Context, ex *execution, n *cnode) (map[string]any, error) {
	in, err := ex.inputOf(n)
	if err != nil {
		return nil, err
	}
	for _, is := range n.spec.inputs {
		if _, ok := in[is.name]; is.required && !ok {
			return nil, fmt.Errorf("missing required input %q", is.name)
		}
	}
	limit := ex.limits.NodeTimeout
	if n.timeout > 0 && n.timeout < limit {
		limit = n.timeout
	}
	nctx, cancel := context.WithTimeoutCause(ctx, limit, fmt.Errorf("node %w after %s", ErrTimeout, limit))
	defer cancel()
	out, err := n.spec.run(nctx, x, &call{node: n, input: in, ex: ex})
	if nctx.Err() != nil {
		if ctx.Err() != nil {
			return nil, execCause(ctx)
		}
		return nil, context.Cause(nctx)
	}
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = map[string]any{}
	}
	return out, nil
}

// inputOf builds a node's input: the execution input for a root node,
// otherwise what its connections carry (a named input, or merged).
func (ex *execution) inputOf(n *cnode) (map[string]any, error) {
	if len(n.in) == 0 {
		return ex.input, nil
	}
	in := map[string]any{}
	for _, e := range n.in {
		var v any = ex.outs[e.from]
		if e.out != "" {
			var ok bool
			if v, ok = ex.outs[e.from][e.out]; !ok {
				return nil, fmt.Errorf("input from %s/%s: node %q produced no output %q", e.fromName, e.out, e.fromName, e.out)
			}
		}
		if e.in != "" {
			in[e.in] = v
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("input from %s/%s: a %T cannot be merged; connect it to a named input", e.fromName, e.out, v)
		}
		maps.Copy(in, m)
	}
	return in, nil
}
