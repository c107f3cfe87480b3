package workflow

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/itchyny/gojq"
	"golang.org/x/sync/errgroup"
)

// nodeSpec describes a node type: its inputs and outputs (for validation),
// how its config is checked and prepared once at compile time, and how it
// runs.
type nodeSpec struct {
	inputs     []inputSpec
	openInputs bool     // any input name is accepted
	outputs    []string // nil: any output name
	prepare    func(cfg map[string]any) (any, error)
	run        func(ctx context.Context, x *Executor, c *call) (map[string]any, error)
}

type inputSpec struct {
	name     string
	required bool
}

func (s *nodeSpec) input(name string) *inputSpec {
	for i := range s.inputs {
		if s.inputs[i].name == name {
			return &s.inputs[i]
		}
	}
	return nil
}

// call is one node invocation.
type call struct {
	node  *cnode
	input map[string]any
	ex    *execution
}

// library is the node types the runner knows. It is a read-only table.
var library = map[string]*nodeSpec{
	"transform": {openInputs: true, prepare: prepareTransform, run: runTransform},
	"identity":  {openInputs: true, run: runIdentity},
	"code":      {openInputs: true, prepare: prepareCode, run: runCode},
	"http":      {openInputs: true, outputs: []string{"status", "headers", "body"}, prepare: prepareHTTP, run: runHTTP},
	"audit_log": {openInputs: true, prepare: prepareAudit, run: runAudit},
	"lineage":   {openInputs: true, outputs: []string{"data", "lineage"}, run: runLineage},
	"sql":       {openInputs: true, outputs: []string{"rows", "count", "columns", "truncated", "first"}, prepare: prepareSQL, run: runSQL},

	"permission_check": {openInputs: true, prepare: preparePermission, run: runPermission},
	// batch's prepare and run reach back into library, so they are attached
	// by batchSpec, not written here (an initialization cycle otherwise).
	"batch": {inputs: []inputSpec{{name: "items", required: true}}, outputs: []string{"results", "count"}},
}

func init() {
	// Completes the batch entry; see the comment in library.
	library["batch"].prepare = prepareBatch
	library["batch"].run = runBatch
}

func str(cfg map[string]any, key string) (string, error) {
	v, ok := cfg[key]
	if !ok || v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s: want a string, got %T", key, v)
	}
	return s, nil
}

// --- transform -------------------------------------------------------------

type transformPrep struct {
	code *gojq.Code // nil without expr
}

// prepareTransform compiles config.expr (a jq expression over the input,
// with $caller and $execution) when given. Without expr the node copies its
// input and applies "remove", "rename" and "set".
func prepareTransform(cfg map[string]any) (any, error) {
	expr, err := str(cfg, "expr")
	if err != nil || expr == "" {
		return &transformPrep{}, err
	}
	q, err := gojq.Parse(expr)
	if err != nil {
		return nil, fmt.Errorf("expr: %w", err)
	}
	code, err := gojq.Compile(q,
		gojq.WithVariables([]string{"$caller", "$execution"}),
		gojq.WithEnvironLoader(func() []string { return nil }), // $ENV and env see nothing of the runner
	)
	if err != nil {
		return nil, fmt.Errorf("expr: %w", err)
	}
	return &transformPrep{code: code}, nil
}

func runTransform(ctx context.Context, _ *Executor, c *call) (map[string]any, error) {
	if p := c.node.prep.(*transformPrep); p.code != nil {
		caller := map[string]any{"tenant": c.ex.c.Tenant, "user": c.ex.c.User, "roles": anySlice(c.ex.c.Roles)}
		iter := p.code.RunWithContext(ctx, c.input, caller, c.ex.id)
		var results []any
		for {
			v, ok := iter.Next()
			if !ok {
				break
			}
			if err, ok := v.(error); ok {
				var halt *gojq.HaltError
				if errors.As(err, &halt) && halt.Value() == nil {
					break
				}
				return nil, fmt.Errorf("expr: %w", err)
			}
			results = append(results, v)
		}
		if len(results) == 1 {
			if m, ok := results[0].(map[string]any); ok {
				return m, nil
			}
			return map[string]any{"result": results[0]}, nil
		}
		return map[string]any{"result": results}, nil
	}
	cfg := c.node.cfg
	out := maps.Clone(c.input)
	if out == nil {
		out = map[string]any{}
	}
	if rm, ok := cfg["remove"].([]any); ok {
		for _, k := range rm {
			delete(out, fmt.Sprint(k))
		}
	}
	if rn, ok := cfg["rename"].(map[string]any); ok {
		for from, to := range rn {
			if v, ok := out[from]; ok {
				delete(out, from)
				out[fmt.Sprint(to)] = v
			}
		}
	}
	if set, ok := cfg["set"].(map[string]any); ok {
		maps.Copy(out, set)
	}
	return out, nil
}

func anySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// --- identity --------------------------------------------------------------

// runIdentity attaches the caller's identity under "identity".
func runIdentity(_ context.Context, _ *Executor, c *call) (map[string]any, error) {
	out := maps.Clone(c.input)
	if out == nil {
		out = map[string]any{}
	}
	out["identity"] = map[string]any{"tenant": c.ex.c.Tenant, "user": c.ex.c.User, "roles": anySlice(c.ex.c.Roles)}
	return out, nil
}

// --- audit_log -------------------------------------------------------------

type auditPrep struct {
	action, resource string
	fields           []string
}

func prepareAudit(cfg map[string]any) (any, error) {
	p := &auditPrep{}
	var err error
	if p.action, err = str(cfg, "action"); err != nil {
		return nil, err
	}
	if p.action == "" {
		p.action = "workflow.audit"
	}
	if p.resource, err = str(cfg, "resource"); err != nil {
		return nil, err
	}
	if fs, ok := cfg["fields"]; ok {
		list, ok := fs.([]any)
		if !ok {
			return nil, errors.New("fields: want a list of input keys")
		}
		for _, f := range list {
			p.fields = append(p.fields, fmt.Sprint(f))
		}
	}
	return p, nil
}

// runAudit records who did what: the action, the caller and the input's
// fields named by config.fields (the whole input when none are named) go to
// the tenant's audit log; the log line carries only ids, never the data. The
// input passes through with "audit_id" added.
func runAudit(ctx context.Context, x *Executor, c *call) (map[string]any, error) {
	p := c.node.prep.(*auditPrep)
	details := c.input
	if p.fields != nil {
		details = map[string]any{}
		for _, f := range p.fields {
			if v, ok := c.input[f]; ok {
				details[f] = v
			}
		}
	}
	rec := AuditRecord{ID: NewID(), At: time.Now().UTC(), Tenant: c.ex.c.Tenant, User: c.ex.c.User,
		Workflow: c.ex.w.Def.Name, Execution: c.ex.id, Node: c.node.id, Action: p.action, Resource: p.resource, Details: details}
	x.log.InfoContext(ctx, "audit", "audit_id", rec.ID, "tenant", rec.Tenant, "user", rec.User,
		"workflow", rec.Workflow, "execution", rec.Execution, "node", rec.Node, "action", rec.Action, "resource", rec.Resource)
	if x.audit != nil {
		if err := x.audit(ctx, rec); err != nil {
			return nil, fmt.Errorf("writing the audit record: %w", err) // fail closed: no audit, no step
		}
	}
	out := maps.Clone(c.input)
	if out == nil {
		out = map[string]any{}
	}
	out["audit_id"] = rec.ID
	return out, nil
}

// --- lineage ---------------------------------------------------------------

// runLineage records the input/output lineage of the execution up to this
// node: for every upstream node, its type, the nodes it read from and a
// SHA-256 digest of its output. Its output is {"data": input.data (or the
// whole input), "lineage": {...}}.
func runLineage(_ context.Context, _ *Executor, c *call) (map[string]any, error) {
	ex := c.ex
	var steps []any
	seen := map[int]bool{}
	var visit func(i int)
	visit = func(i int) {
		if seen[i] {
			return
		}
		seen[i] = true
		n := ex.w.nodes[i]
		var from []any
		for _, e := range n.in {
			visit(e.from)
			from = append(from, e.fromName)
		}
		b, _ := json.Marshal(ex.outs[i])
		sum := sha256.Sum256(b)
		steps = append(steps, map[string]any{"node": n.id, "type": n.typ, "from": from, "output_sha256": hex.EncodeToString(sum[:])})
	}
	for _, e := range c.node.in {
		visit(e.from)
	}
	lin := map[string]any{"execution_id": ex.id, "workflow": ex.w.Def.Name, "node": c.node.id, "upstream": steps}
	if s, _ := str(c.node.cfg, "source"); s != "" {
		lin["source"] = s
	}
	if t, _ := str(c.node.cfg, "target"); t != "" {
		lin["target"] = t
	}
	var data any = c.input
	if d, ok := c.input["data"]; ok {
		data = d
	}
	return map[string]any{"data": data, "lineage": lin}, nil
}

// --- batch -----------------------------------------------------------------

type batchPrep struct {
	step        *cnode
	concurrency int
}

// prepareBatch compiles config.step ({type, config}), the sub-step mapped
// over the items; config.concurrency (default 4, at most 64) bounds how many
// run at once.
func prepareBatch(cfg map[string]any) (any, error) {
	st, ok := cfg["step"].(map[string]any)
	if !ok {
		return nil, errors.New("step: required, an object with type and config")
	}
	typ, _ := st["type"].(string)
	spec, ok := library[typ]
	switch {
	case !ok:
		return nil, fmt.Errorf("step.type: unknown type %q (known: %v)", typ, NodeTypes())
	case typ == "batch":
		return nil, errors.New("step.type: a batch cannot map another batch")
	}
	sub, _ := st["config"].(map[string]any)
	if sub == nil {
		sub = map[string]any{}
	}
	p := &batchPrep{step: &cnode{id: "step", typ: typ, spec: spec, cfg: sub}, concurrency: 4}
	if spec.prepare != nil {
		var err error
		if p.step.prep, err = spec.prepare(sub); err != nil {
			return nil, fmt.Errorf("step: %w", err)
		}
	}
	if v, ok := cfg["concurrency"]; ok {
		f, ok := v.(float64)
		if !ok || f < 1 || f > 64 || f != float64(int(f)) {
			return nil, fmt.Errorf("concurrency: want an integer 1..64, got %v", v)
		}
		p.concurrency = int(f)
	}
	return p, nil
}

// runBatch runs the sub-step once per item of input.items, with
// {"item": item, "index": i} as its input; the output is
// {"results": [each sub-step output, in item order], "count": n}. The first
// failure cancels the others.
func runBatch(ctx context.Context, x *Executor, c *call) (map[string]any, error) {
	p := c.node.prep.(*batchPrep)
	items, ok := c.input["items"].([]any)
	if !ok {
		return nil, fmt.Errorf("input items: want a list, got %T", c.input["items"])
	}
	if max := c.ex.limits.BatchMaxItems; len(items) > max {
		return nil, &LimitError{Tenant: c.ex.c.Tenant, Limit: "batch_max_items", Msg: fmt.Sprintf("node %q got %d items, more than the %d allowed", c.node.id, len(items), max)}
	}
	results := make([]any, len(items))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.concurrency)
	for i, it := range items {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			sc := &call{node: p.step, input: map[string]any{"item": it, "index": float64(i)}, ex: c.ex}
			out, err := p.step.spec.run(gctx, x, sc)
			if err != nil {
				return fmt.Errorf("item %d: %w", i, err)
			}
			results[i] = out
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return map[string]any{"results": results, "count": float64(len(items))}, nil
}

// IsNodeType says whether t names a node type of the library.
func IsNodeType(t string) bool {
	_, ok := library[t]
	return ok
}

// NewID is an identifier for an execution or an audit record: 26
// characters of base32 (extended hex, lower case, so they sort as their
// bytes do) of 48 bits of milliseconds since the epoch and 80 random bits.
// Ids made later sort later, so the store's indexes on them grow at their
// end: a group commit dirties a few pages, not one per row (random ids
// touched a page of every index per execution). 80 random bits keep them
// unguessable.
func NewID() string {
	var b [16]byte
	ms := uint64(time.Now().UnixMilli())
	for i := range 6 {
		b[i] = byte(ms >> (8 * (5 - i)))
	}
	_, _ = rand.Read(b[6:])
	return idEncoding.EncodeToString(b[:])
}

var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)
