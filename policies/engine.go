package policies

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// DefaultDecision is evaluated when EngineOptions.Decision is empty.
const DefaultDecision = "kailash/authz/result"

// Errors returned by Eval. Callers fail closed on every one of them.
var (
	// ErrUndefined means the decision has no value for this input.
	ErrUndefined = errors.New("policy decision is undefined")
	// ErrMultipleResults means the decision query produced more than one result.
	ErrMultipleResults = errors.New("policy decision has more than one result")
)

// EngineOptions selects the bundle and the decision.
type EngineOptions struct {
	// Dir is a bundle directory; "" uses the bundle embedded in the binary.
	Dir string
	// Decision is the path of the rule evaluated, e.g. "kailash/authz/result"
	// (queries data.kailash.authz.result). "" means DefaultDecision.
	Decision string
}

// Engine evaluates one decision of one bundle. It is safe for concurrent use;
// Reload swaps the prepared query atomically.
type Engine struct {
	dir   string
	query ast.Body
	ref   ast.Ref

	mu  sync.Mutex // serialises Reload; readers never take it
	cur atomic.Pointer[prepared]
}

// prepared is one immutable compiled version of the bundle.
type prepared struct {
	pq       rego.PreparedEvalQuery
	revision string
}

// NewEngine loads, compiles and prepares the bundle.
func NewEngine(ctx context.Context, opts EngineOptions) (*Engine, error) {
	ref, err := DecisionRef(opts.Decision)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		dir:   opts.Dir,
		ref:   ref,
		query: ast.NewBody(ast.NewExpr(ast.NewTerm(ref))),
	}
	if err := e.Reload(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// DecisionRef turns "kailash/authz/result" into the reference
// data.kailash.authz.result.
func DecisionRef(decision string) (ast.Ref, error) {
	if decision == "" {
		decision = DefaultDecision
	}
	if strings.HasPrefix(decision, "/") || strings.HasPrefix(decision, "data.") {
		return nil, fmt.Errorf("policy decision %q: give the path without a leading / or data. prefix", decision)
	}
	ref := ast.Ref{ast.DefaultRootDocument}
	for _, seg := range strings.Split(decision, "/") {
		if seg == "" {
			return nil, fmt.Errorf("policy decision %q: empty path segment", decision)
		}
		ref = append(ref, ast.StringTerm(seg))
	}
	return ref, nil
}

// Dir is the bundle directory ("" for the embedded bundle).
func (e *Engine) Dir() string { return e.dir }

// Revision identifies the loaded bundle version (a hash of its files).
func (e *Engine) Revision() string { return e.cur.Load().revision }

// Reload re-reads the bundle, compiles it and swaps it in. On any error the
// previous version keeps serving and the error names file:row:col.
func (e *Engine) Reload(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	f, err := loadFiles(e.dir)
	if err != nil {
		return err
	}
	if cur := e.cur.Load(); cur != nil && cur.revision == f.revision {
		return nil
	}
	p, err := e.prepare(ctx, f)
	if err != nil {
		return err
	}
	e.cur.Store(p)
	return nil
}

func (e *Engine) prepare(ctx context.Context, f *files) (*prepared, error) {
	compiler := ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1)
	if compiler.Compile(f.modules); compiler.Failed() {
		return nil, locate(compiler.Errors)
	}
	if len(compiler.GetRules(e.ref)) == 0 && !hasData(f.data, e.ref) {
		return nil, fmt.Errorf("policy decision %s: no rule or data defines it", e.ref)
	}
	store := inmem.NewFromObjectWithOpts(f.data, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	pq, err := rego.New(
		rego.ParsedQuery(e.query),
		rego.Compiler(compiler),
		rego.Store(store),
		rego.StoreReadAST(true),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, locate(err)
	}
	return &prepared{pq: pq, revision: f.revision}, nil
}

func hasData(data map[string]any, ref ast.Ref) bool {
	var node any = data
	for _, t := range ref[1:] {
		m, ok := node.(map[string]any)
		if !ok {
			return false
		}
		s, _ := t.Value.(ast.String)
		if node, ok = m[string(s)]; !ok {
			return false
		}
	}
	return true
}

// Eval evaluates the decision with input (built as an AST value by the
// caller, which is about twice as cheap as converting a Go map) and returns
// its single value as plain Go data (bool, string, json.Number, []any,
// map[string]any). An undefined decision is ErrUndefined; more than one
// result is ErrMultipleResults; evaluation errors, and ctx's error when it
// ended during evaluation, are returned as they are.
func (e *Engine) Eval(ctx context.Context, input ast.Value) (any, error) {
	p := e.cur.Load()
	rs, err := p.pq.Eval(ctx, rego.EvalParsedInput(input))
	if err != nil {
		return nil, err
	}
	// OPA checks for cancellation only now and then; a decision reached
	// after the deadline must not be used.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	switch {
	case len(rs) == 0:
		return nil, ErrUndefined
	case len(rs) > 1:
		return nil, ErrMultipleResults
	case len(rs[0].Expressions) != 1:
		return nil, fmt.Errorf("policy decision: %d expressions in the result", len(rs[0].Expressions))
	}
	return rs[0].Expressions[0].Value, nil
}
