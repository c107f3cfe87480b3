package policies

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/lineage"
)

// Check loads the bundles and files at paths (none: the embedded bundle;
// see Test for how each is read) and compiles them together, tests
// included, and, when decision is set, checks a rule defines it. Lint
// findings (OPA's strict mode: unused variables, imports and arguments,
// deprecated built-ins, shadowed input) are returned apart, one per
// finding as file:row:col with OPA's details, and do not make the bundle
// invalid.
func Check(paths []string, decision string) (sources []Source, lint []string, err error) {
	f, sources, err := loadSources(paths)
	if err != nil {
		return nil, nil, err
	}
	if len(f.modules) == 0 {
		return nil, nil, fmt.Errorf("policy check %s: no .rego modules besides tests", strings.Join(paths, ", "))
	}
	mods := maps.Clone(f.modules)
	maps.Copy(mods, f.tests)
	c := ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1)
	if c.Compile(mods); c.Failed() {
		return nil, nil, locate(c.Errors, "")
	}
	if decision != "" {
		ref, err := DecisionRef(decision)
		if err != nil {
			return nil, nil, err
		}
		if len(c.GetRules(ref)) == 0 && !hasData(f.data, ref) {
			return nil, nil, fmt.Errorf("policy decision %s: no rule or data defines it", ref)
		}
	}
	strict := ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1).WithStrict(true)
	if strict.Compile(mods); strict.Failed() {
		for _, e := range strict.Errors {
			lint = append(lint, locate(ast.Errors{e}, "").Error())
		}
	}
	return sources, lint, nil
}

// Explanation is a decision and why: the value of every rule of the
// decision's package for this input, and optionally OPA's trace.
type Explanation struct {
	Decision string
	Revision string
	Result   any
	Err      error
	// Rules holds each rule of the decision's package that has a value
	// for this input (rules that are undefined are listed in Undefined).
	Rules     map[string]any
	Undefined []string
	Trace     string
}

// Explain evaluates decision on input (a JSON document) with the bundle in
// dir. mode "fails" or "full" adds OPA's trace (failed expressions only, or
// everything), "notes" the trace's notes.
func Explain(ctx context.Context, dir, decision string, input any, mode string) (*Explanation, error) {
	e, err := NewEngine(ctx, EngineOptions{Dir: dir, Decision: decision})
	if err != nil {
		return nil, err
	}
	iv, err := ast.InterfaceToValue(input)
	if err != nil {
		return nil, fmt.Errorf("input: %w", err)
	}
	out := &Explanation{Decision: e.Decision(), Revision: e.Revision(), Rules: map[string]any{}}
	out.Result, out.Err = e.Eval(ctx, iv)

	f, err := loadFiles(dir, nil)
	if err != nil {
		return nil, err
	}
	c, err := compile(f)
	if err != nil {
		return nil, err
	}
	pkg := e.ref[:len(e.ref)-1]
	store := inmem.NewFromObjectWithOpts(f.data, inmem.OptRoundTripOnWrite(false))
	explainRules(ctx, c, store, false, pkg, iv, out)
	if mode == "full" || mode == "fails" || mode == "notes" {
		buf := topdown.NewBufferTracer()
		_, _ = rego.New(rego.ParsedQuery(e.query), rego.Compiler(c), rego.Store(store), rego.ParsedInput(iv),
			rego.QueryTracer(buf)).Eval(ctx)
		trace := []*topdown.Event(*buf)
		switch mode {
		case "fails":
			trace = lineage.Fails(trace)
		case "notes":
			trace = lineage.Notes(trace)
		}
		var tb bytes.Buffer
		topdown.PrettyTraceWithLocation(&tb, trace)
		out.Trace = tb.String()
	}
	return out, nil
}

// explainRules fills out.Rules and out.Undefined: the value of each rule of
// package pkg for input iv.
func explainRules(ctx context.Context, c *ast.Compiler, store storage.Store, storeAST bool, pkg ast.Ref, iv ast.Value, out *Explanation) {
	var names []string
	for _, m := range c.Modules {
		if !m.Package.Path.Equal(pkg) {
			continue
		}
		for _, r := range m.Rules {
			n := r.Head.Name.String()
			if n == "" && len(r.Head.Reference) > 0 {
				n = r.Head.Reference[len(r.Head.Reference)-1].String()
			}
			if strings.HasPrefix(n, "test_") || strings.Trim(n, `"`) == "" {
				continue
			}
			names = append(names, strings.Trim(n, `"`))
		}
	}
	sort.Strings(names)
	names = compactStrings(names)
	for _, n := range names {
		ref := append(pkg.Copy(), ast.StringTerm(n))
		rs, err := rego.New(rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(ref)))), rego.Compiler(c), rego.Store(store),
			rego.StoreReadAST(storeAST), rego.ParsedInput(iv)).Eval(ctx)
		switch {
		case err != nil:
			out.Rules[n] = "error: " + err.Error()
		case len(rs) == 0:
			out.Undefined = append(out.Undefined, n)
		default:
			out.Rules[n] = rs[0].Expressions[0].Value
		}
	}
}

// ExplainRules is Explain for an input the engine evaluated: the decision
// and the value of every rule of its package, from the bundle version in
// force now (its revision is in the result).
func (e *Engine) ExplainRules(ctx context.Context, input ast.Value) *Explanation {
	p := e.cur.Load()
	out := &Explanation{Decision: e.Decision(), Revision: p.revision, Rules: map[string]any{}}
	out.Result, out.Err = e.Eval(ctx, input)
	explainRules(ctx, p.compiler, p.store, true, e.ref[:len(e.ref)-1], input, out)
	return out
}

func compactStrings(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// ReplayReport is what a candidate bundle would change over logged decisions.
type ReplayReport struct {
	Total, Changed, Errors, Skipped int
	// ByKey counts changes by "tenant path" (the request path without its
	// query), with up to a few examples each.
	ByKey map[string]*ReplayGroup
}

// ReplayGroup is the changes for one tenant and request path.
type ReplayGroup struct {
	Tenant, Path     string
	Changed          int
	Allowed, Denied  int // changes to allow, changes to deny
	ExampleDecisions []ReplayExample
}

// ReplayExample is one changed decision.
type ReplayExample struct {
	DecisionID string `json:"decision_id"`
	Before     string `json:"before"`
	After      string `json:"after"`
}

// Replay re-evaluates the input of every decision log line read from r
// (JSON lines as DecisionLogger writes them) with candidate, and reports
// the decisions whose outcome (allow, deny, error) would change. Lines
// without input (401s, for example: no policy ran) are skipped. Masked
// input fields are absent, as they were when logged.
func Replay(ctx context.Context, candidate *Engine, r io.Reader, examples int) (*ReplayReport, error) {
	logged := func(_ context.Context, ev *DecisionEvent, _ ast.Value) string { return outcomeOf(ev.Result, ev.Error) }
	return replay(ctx, logged, candidate, r, examples)
}

// Diff re-evaluates the input of every decision log line read from r with
// both active and candidate, and reports the decisions whose outcome
// (allow, deny, error) differs between them: what shipping candidate in
// place of active would change for the traffic logged, whatever bundle
// answered it then. Lines without input are skipped, as in Replay.
func Diff(ctx context.Context, active, candidate *Engine, r io.Reader, examples int) (*ReplayReport, error) {
	before := func(ctx context.Context, _ *DecisionEvent, iv ast.Value) string {
		res, err := active.Eval(ctx, iv)
		errText := ""
		if err != nil {
			errText = err.Error()
		}
		return outcomeOf(res, errText)
	}
	return replay(ctx, before, candidate, r, examples)
}

// replay is Replay and Diff: before is the outcome to compare with.
func replay(ctx context.Context, before func(context.Context, *DecisionEvent, ast.Value) string, candidate *Engine, r io.Reader, examples int) (*ReplayReport, error) {
	rep := &ReplayReport{ByKey: map[string]*ReplayGroup{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	line := 0
	for sc.Scan() {
		line++
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var ev DecisionEvent
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.UseNumber()
		if err := dec.Decode(&ev); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if ev.Input == nil {
			rep.Skipped++
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rep.Total++
		iv, err := ast.InterfaceToValue(ev.Input)
		if err != nil {
			return nil, fmt.Errorf("line %d: input: %w", line, err)
		}
		before := before(ctx, &ev, iv)
		res, err := candidate.Eval(ctx, iv)
		errText := ""
		if err != nil {
			errText = err.Error()
			rep.Errors++
		}
		after := outcomeOf(res, errText)
		if before == after {
			continue
		}
		rep.Changed++
		path := ev.RequestPath
		if p, ok := lookup(ev.Input, "attributes", "request", "http", "path").(string); ok && path == "" {
			path = p
		}
		path, _, _ = strings.Cut(path, "?")
		key := ev.Tenant + " " + path
		g := rep.ByKey[key]
		if g == nil {
			g = &ReplayGroup{Tenant: ev.Tenant, Path: path}
			rep.ByKey[key] = g
		}
		g.Changed++
		switch after {
		case "allow":
			g.Allowed++
		default:
			g.Denied++
		}
		if len(g.ExampleDecisions) < examples {
			g.ExampleDecisions = append(g.ExampleDecisions, ReplayExample{DecisionID: ev.DecisionID, Before: before, After: after})
		}
	}
	return rep, sc.Err()
}

func outcomeOf(result any, errText string) string {
	if errText != "" || result == nil {
		return "error"
	}
	ok, err := Allowed(result)
	switch {
	case err != nil:
		return "error"
	case ok:
		return "allow"
	}
	return "deny"
}

func lookup(doc any, keys ...string) any {
	for _, k := range keys {
		m, ok := doc.(map[string]any)
		if !ok {
			return nil
		}
		doc = m[k]
	}
	return doc
}

// WriteReplayReport prints rep for people: totals, then each tenant and
// path with its changes and examples, most changes first.
func WriteReplayReport(w io.Writer, rep *ReplayReport) {
	fmt.Fprintf(w, "%d decisions replayed, %d would change, %d candidate errors, %d skipped (no input)\n", rep.Total, rep.Changed, rep.Errors, rep.Skipped)
	groups := make([]*ReplayGroup, 0, len(rep.ByKey))
	for _, g := range rep.ByKey {
		groups = append(groups, g)
	}
	sort.Slice(groups, func(i, j int) bool {
		if groups[i].Changed != groups[j].Changed {
			return groups[i].Changed > groups[j].Changed
		}
		return groups[i].Tenant+groups[i].Path < groups[j].Tenant+groups[j].Path
	})
	for _, g := range groups {
		tenant := g.Tenant
		if tenant == "" {
			tenant = "-"
		}
		fmt.Fprintf(w, "  tenant %s  %s: %d changed (%d now allowed, %d now denied or failing)\n", tenant, g.Path, g.Changed, g.Allowed, g.Denied)
		for _, ex := range g.ExampleDecisions {
			fmt.Fprintf(w, "    e.g. decision %s: %s -> %s\n", ex.DecisionID, ex.Before, ex.After)
		}
	}
}
