package policies

import (
	"slices"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Why a bundle's decisions are not cached (the reason label of
// kailash_policy_decision_cache_bypass_total). Each is decided once per
// bundle version from the compiled policy, except BypassUnboundedTime,
// which is decided per evaluation.
const (
	BypassDisabled = "disabled"
	// BypassInputWhole: the policy reads input as a whole (input passed to
	// a function such as json.marshal, walk or object.get, `with x as
	// input`, a bare `input` anywhere).
	BypassInputWhole = "input_whole"
	// BypassInputDynamic: the policy indexes input itself with a value
	// known only while evaluating (input[x]).
	BypassInputDynamic = "input_dynamic"
	// BypassNondeterministic prefixes the name of a builtin whose result
	// the cache cannot bound (time.now_ns, http.send, rand.intn,
	// uuid.rfc4122, net.lookup_ip_addr, opa.runtime, …):
	// "nondeterministic:http.send".
	BypassNondeterministic = "nondeterministic:"
	// BypassUnboundedTime: io.jwt.decode_verify was called on a token whose
	// exp/nbf could not be read, so the entry's lifetime cannot be bounded.
	BypassUnboundedTime = "unbounded_time"
)

// decodeVerify is the one non-deterministic builtin the cache handles: its
// result depends on the time only through the token's exp and nbf (OPA's
// topdown/tokens.go: valid iff now/1e9 < exp and now/1e9 >= nbf, with the
// "time" constraint replacing now). So for one token it is constant between
// two of those instants, and an entry is used only inside that interval.
const decodeVerify = "io.jwt.decode_verify"

// timeDependent are builtins OPA does not mark Nondeterministic whose result
// still depends on the wall clock: x509 chain verification checks validity
// periods against time.Now.
var timeDependent = map[string]bool{
	"crypto.x509.parse_and_verify_certificates":              true,
	"crypto.x509.parse_and_verify_certificates_with_options": true,
}

// cachePlan is what the analysis of one compiled bundle found: either why
// its decision cannot be cached, or exactly which parts of the input it can
// read.
type cachePlan struct {
	bypass string    // "" when decisions are cacheable
	paths  []ast.Ref // input paths read (without the leading input), none a prefix of another, sorted
	// pathsKnown: paths is complete (also when a non-deterministic
	// builtin makes bypass non-empty); false when the input is read whole
	// or by a computed key.
	pathsKnown bool
	// boundedTime: the policy can call io.jwt.decode_verify; each entry's
	// lifetime is bounded by the tokens it verified.
	boundedTime bool
}

// Paths is the plan's input paths as text ("input.attributes.request.http.method").
func (p *cachePlan) Paths() []string {
	out := make([]string, len(p.paths))
	for i, r := range p.paths {
		out[i] = ast.Ref(append(ast.Ref{ast.InputRootDocument}, r...)).String()
	}
	return out
}

// planCache walks every rule reachable from decision (rules it refers to,
// functions it calls, rules named by `with`, transitively; a dynamic data
// reference reaches every rule it may name, a bare `data` every rule) and
// collects the input references and builtins they contain. Over-reporting a
// path only costs hits; the walk never under-reports, because every read of
// the input is a reference rooted at the input variable, in some rule the
// decision can reach.
func planCache(c *ast.Compiler, decision ast.Ref) *cachePlan {
	a := &planner{c: c, seen: map[*ast.Rule]bool{}, paths: map[string]ast.Ref{}}
	a.reach(decision)
	// A non-deterministic builtin bypasses the cache but does not stop
	// the walk: the input paths stay known (InputNeed), unlike a read of
	// the input as a whole or by a computed key.
	for len(a.queue) > 0 && a.bypass == "" {
		r := a.queue[len(a.queue)-1]
		a.queue = a.queue[:len(a.queue)-1]
		a.walk(r)
	}
	p := &cachePlan{bypass: a.bypass, boundedTime: a.decodeVerify}
	if p.bypass != "" {
		return p
	}
	p.paths, p.pathsKnown = minimalPaths(a.paths), true
	if a.nondet != "" {
		p.bypass = a.nondet
	}
	return p
}

type planner struct {
	c            *ast.Compiler
	seen         map[*ast.Rule]bool
	queue        []*ast.Rule
	paths        map[string]ast.Ref
	decodeVerify bool
	bypass       string // the input read whole or dynamically: nothing is known
	nondet       string // the first non-deterministic builtin: not cacheable
}

// reach queues the rules a data reference may name. A reference that
// names an input alias (`http := input.attributes.request.http`) by its
// whole path reads, through it, only the input under the alias's path and
// the reference's constant rest: `http.method` reads
// input.attributes.request.http.method, not all of http.
func (a *planner) reach(ref ast.Ref) {
	n := 1 + constantPrefix(ref[1:])
	for _, r := range a.c.GetRulesDynamicWithOpts(ref, ast.RulesOptions{IncludeHiddenModules: true}) {
		if target, ok := a.alias(r); ok {
			if rp := r.Ref(); n >= len(rp) && ref[:len(rp)].Equal(rp) {
				p := append(target.Copy(), ref[len(rp):n].Copy()...)
				a.paths[p.String()] = p
				continue
			}
		}
		a.add(r)
	}
}

// alias reports whether r is the one rule of its path (none beneath it)
// and is `name := input.<constant path>` with no condition; target is
// that path.
func (a *planner) alias(r *ast.Rule) (target ast.Ref, ok bool) {
	h := r.Head
	if len(h.Args) != 0 || h.Key != nil || h.Value == nil || r.Else != nil || r.Default || !h.Ref().IsGround() {
		return nil, false
	}
	if len(r.Body) != 1 || len(r.Body[0].With) > 0 || r.Body[0].Negated {
		return nil, false
	}
	// Compiled, `x := input.a.b` is `__local0__ = input.a.b` in the body and
	// __local0__ as the value; uncompiled (tests), the value itself and `true`.
	var v ast.Ref
	e := r.Body[0]
	switch val := h.Value.Value.(type) {
	case ast.Var:
		if !e.IsEquality() || len(e.Operands()) != 2 {
			return nil, false
		}
		ref, isRef := e.Operand(1).Value.(ast.Ref)
		if !isRef || e.Operand(0).Value.Compare(val) != 0 {
			return nil, false
		}
		v = ref
	case ast.Ref:
		if t, isTerm := e.Terms.(*ast.Term); !isTerm || !ast.BooleanTerm(true).Equal(t) {
			return nil, false
		}
		v = val
	default:
		return nil, false
	}
	if len(v) < 2 || !v[0].Equal(ast.InputRootDocument) || constantPrefix(v[1:]) != len(v)-1 {
		return nil, false
	}
	if len(a.c.GetRulesWithPrefix(r.Ref())) != 1 {
		return nil, false
	}
	return v[1:], true
}

func (a *planner) add(r *ast.Rule) {
	if !a.seen[r] {
		a.seen[r] = true
		a.queue = append(a.queue, r)
	}
}

func (a *planner) reachAll() {
	for _, m := range a.c.Modules {
		for _, r := range m.Rules {
			a.add(r)
			for e := r.Else; e != nil; e = e.Else {
				a.add(e)
			}
		}
	}
}

func (a *planner) fail(reason string) {
	if a.bypass == "" {
		a.bypass = reason
	}
}

func (a *planner) walk(rule *ast.Rule) {
	var vis *ast.GenericVisitor
	vis = ast.NewGenericVisitor(func(x any) bool {
		switch v := x.(type) {
		case ast.Var:
			if v.Equal(ast.InputRootDocument.Value) {
				a.fail(BypassInputWhole)
			} else if v.Equal(ast.DefaultRootDocument.Value) {
				a.reachAll()
			}
		case ast.Ref:
			a.ref(v)
			for _, t := range v[1:] { // the head is handled by ref; what indexes it may read more
				vis.Walk(t)
			}
			return true
		}
		return false
	})
	vis.Walk(rule)
}

// ref handles one reference: to the input (a path read), to data (rules
// reached) or to a builtin.
func (a *planner) ref(r ast.Ref) {
	head, ok := r[0].Value.(ast.Var)
	if !ok {
		return
	}
	switch {
	case head.Equal(ast.InputRootDocument.Value):
		n := constantPrefix(r[1:])
		if n == 0 {
			if len(r) == 1 {
				a.fail(BypassInputWhole)
			} else {
				a.fail(BypassInputDynamic)
			}
			return
		}
		p := r[1 : 1+n].Copy()
		a.paths[p.String()] = p
	case head.Equal(ast.DefaultRootDocument.Value):
		if len(r) == 1 || constantPrefix(r[1:]) == 0 {
			a.reachAll()
			return
		}
		a.reach(r)
	default:
		name := r.String()
		switch b, ok := ast.BuiltinMap[name]; {
		case timeDependent[name], ok && name != decodeVerify && b.Nondeterministic:
			if a.nondet == "" {
				a.nondet = BypassNondeterministic + name
			}
		case name == decodeVerify:
			a.decodeVerify = true
		}
	}
}

// constantPrefix is how many leading terms of path are scalars (strings,
// numbers, booleans, null): the part of the path known before evaluation.
func constantPrefix(path ast.Ref) int {
	for i, t := range path {
		if !ast.IsScalar(t.Value) {
			return i
		}
	}
	return len(path)
}

// minimalPaths drops every path another one is a prefix of (its value is
// part of the shorter path's) and sorts the rest.
func minimalPaths(m map[string]ast.Ref) []ast.Ref {
	all := make([]ast.Ref, 0, len(m))
	for _, p := range m {
		all = append(all, p)
	}
	sort.Slice(all, func(i, j int) bool {
		return len(all[i]) < len(all[j]) || len(all[i]) == len(all[j]) && all[i].Compare(all[j]) < 0
	})
	var out []ast.Ref
	for _, p := range all {
		if !slices.ContainsFunc(out, func(q ast.Ref) bool { return p.HasPrefix(q) }) {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Compare(out[j]) < 0 })
	return out
}

// describe is the plan for logs and status.
func (p *cachePlan) describe() string {
	if p.bypass != "" {
		return "bypassed: " + p.bypass
	}
	s := "on, key: " + strings.Join(p.Paths(), ", ")
	if p.boundedTime {
		s += "; entries end at the verified tokens' exp/nbf"
	}
	return s
}
