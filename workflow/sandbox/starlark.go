// Package sandbox runs a workflow's code nodes: Starlark scripts rewritten
// so that every allocation is estimated and charged against a budget
// (the rewriter and the checked builtins), in a worker process under rlimits
// (WorkerMain, RunInWorker).
package sandbox

// The code node runs Starlark (go.starlark.net), a Python dialect with no
// file, network, clock or environment access to begin with; load() is
// refused. Three bounds make a tenant's script safe to run:
//
//   - steps: thread.SetMaxExecutionSteps (runner.limits.code_max_steps);
//   - memory: an allocation budget (runner.limits.code_max_memory). Starlark
//     has no allocator hook, so the script is rewritten before compiling so
//     that every expression form that makes a value goes through a checked
//     helper (see "the rewriter"): operators and augmented assignments on
//     any target, method calls and methods taken as values (only methods in
//     the vetted methodCost table are reachable), spreads, slices and the
//     wrapped builtins estimate the result and refuse it before it is made,
//     and charge it after; every step is charged a small constant for the
//     small values it may create. The budget counts bytes allocated, so it
//     bounds the live heap too. FuzzCodeNodeMemory holds it to a measured
//     bound over generated programs;
//   - a worker process (worker.go) with RLIMIT_DATA and RLIMIT_CPU:
//     should the accounting ever be beaten, the worker dies, not the runner.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"

	"go.starlark.net/starlark"
	"go.starlark.net/syntax"
)

const (
	maxScriptBytes = 64 << 10
	stepCharge     = 32   // bytes charged per step
	checkEvery     = 1024 // steps between budget checkpoints
	acctKey        = "kailash.acct"
	maxIntBits     = 1 << 16 // the largest product a script may compute
)

var codeFileOptions = &syntax.FileOptions{While: true, TopLevelControl: true, GlobalReassign: true}

// Program is a compiled, rewritten script, run as often as needed.
type Program struct {
	prog        *starlark.Program
	predeclared starlark.StringDict // wrapped builtins, without the per-run names
}

// Compile parses a code node's script, refuses load() and the reserved
// _kl_ names, rewrites it for memory accounting and compiles it once.
func Compile(src string) (*Program, error) {
	if src == "" {
		return nil, errors.New("code: required (a Starlark script that sets result)")
	}
	if len(src) > maxScriptBytes {
		return nil, fmt.Errorf("code: %d bytes, more than %d", len(src), maxScriptBytes)
	}
	f, err := codeFileOptions.Parse("code", src, 0)
	if err != nil {
		return nil, fmt.Errorf("code: %w", err)
	}
	// The helpers the rewriter calls are predeclared; a script that names
	// one could shadow it with a global of its own.
	var reserved error
	syntax.Walk(f, func(n syntax.Node) bool {
		if id, ok := n.(*syntax.Ident); ok && strings.HasPrefix(id.Name, "_kl_") && reserved == nil {
			reserved = fmt.Errorf("code: %s: names starting with _kl_ are reserved", id.NamePos)
		}
		return reserved == nil
	})
	if reserved != nil {
		return nil, reserved
	}
	if err := rwStmts(f.Stmts); err != nil {
		return nil, fmt.Errorf("code: %w", err)
	}
	pre := sandboxBuiltins()
	isPre := func(name string) bool {
		_, ok := pre[name]
		return ok || name == "parameters" || name == "caller"
	}
	prog, err := starlark.FileProgram(f, isPre)
	if err != nil {
		return nil, fmt.Errorf("code: %w", err)
	}
	return &Program{prog: prog, predeclared: pre}, nil
}

// Run runs the script in this process with the job's input, caller and
// limits, with `parameters` (the input) and `caller` predeclared; its output
// is {"result": the value the script left in result}.
func (p *Program) Run(ctx context.Context, job Job) (map[string]any, error) {
	params, err := toStarlark(job.Input, 0)
	if err != nil {
		return nil, fmt.Errorf("parameters: %w", err)
	}
	callerV, _ := toStarlark(map[string]any{"tenant": job.Tenant, "user": job.User, "roles": anySlice(job.Roles)}, 0)
	pre := make(starlark.StringDict, len(p.predeclared)+2)
	for k, v := range p.predeclared {
		pre[k] = v
	}
	pre["parameters"], pre["caller"] = params, callerV

	a := &acct{budget: job.MaxMemory, maxSteps: job.MaxSteps}
	th := &starlark.Thread{Name: job.Node, Print: func(*starlark.Thread, string) {}}
	th.SetLocal(acctKey, a)
	th.OnMaxSteps = a.checkpoint
	th.SetMaxExecutionSteps(min(checkEvery, a.maxSteps))

	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			th.Cancel(context.Cause(ctx).Error())
		case <-done:
		}
	}()
	globals, err := p.prog.Init(th, pre)
	if err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		var ee *starlark.EvalError
		if errors.As(err, &ee) && len(ee.CallStack) > 0 {
			// The innermost frame of the script, not of a checked helper.
			pos := ee.CallStack.At(0).Pos
			for i := len(ee.CallStack) - 1; i >= 0; i-- {
				if p := ee.CallStack[i].Pos; p.Filename() != "<builtin>" {
					pos = p
					break
				}
			}
			return nil, fmt.Errorf("%s: %s", pos, ee.Msg)
		}
		return nil, err
	}
	res, ok := globals["result"]
	if !ok {
		return nil, errors.New("the script did not set result")
	}
	out, err := fromStarlark(res, 0)
	if err != nil {
		return nil, fmt.Errorf("result: %w", err)
	}
	return map[string]any{"result": out}, nil
}

// acct is one run's step and allocation accounting. It is used only from
// the thread running the script.
type acct struct {
	budget, used int64
	maxSteps     uint64
	charged      uint64 // steps already charged
}

func (a *acct) charge(n int64) error {
	if n < 0 || n > a.budget {
		n = a.budget + 1
	}
	if a.used += n; a.used > a.budget {
		return fmt.Errorf("memory limit exceeded: the script would use more than %d bytes (code_max_memory)", a.budget)
	}
	return nil
}

func (a *acct) checkpoint(th *starlark.Thread) {
	steps := th.ExecutionSteps()
	if err := a.charge(int64(steps-a.charged) * stepCharge); err != nil {
		th.Cancel(err.Error())
		return
	}
	a.charged = steps
	if steps >= a.maxSteps {
		th.Cancel(fmt.Sprintf("step limit exceeded: more than %d steps (code_max_steps)", a.maxSteps))
		return
	}
	th.SetMaxExecutionSteps(min(steps+checkEvery, a.maxSteps))
}

func acctOf(th *starlark.Thread) *acct {
	if a, ok := th.Local(acctKey).(*acct); ok {
		return a
	}
	return &acct{budget: 0} // unreachable in the runner: refuse everything
}

// --- the rewriter ----------------------------------------------------------
//
// The rewriter is complete over the syntax tree: every expression and
// statement form that can compute a new value goes through a checked helper.
//
//   - every arithmetic binary operator (x op y) and augmented assignment
//     (t op= y, whatever the target: a name, an index, or refused for a
//     field) goes through _kl_bin / _kl_aug / _kl_augindex, which estimate
//     the result before computing it and charge it after;
//   - every unary -x, +x, ~x goes through _kl_unary (charged);
//   - every method call x.m(...) goes through _kl_method, and every other
//     attribute read x.m (a first-class bound method, f = l.extend) through
//     _kl_attr, which returns the method wrapped in the same checks, so no
//     built-in method can be reached unchecked (getattr is wrapped alike);
//   - every *args / **kwargs spread in a call is charged for the tuple or
//     dict it makes (_kl_spread);
//   - every slice is charged (_kl_charge);
//   - literals, comprehensions and everything else make at most a few small
//     values per step, which the per-step charge covers.

func rwStmts(ss []syntax.Stmt) error {
	for i, s := range ss {
		ns, err := rwStmt(s)
		if err != nil {
			return err
		}
		ss[i] = ns
	}
	return nil
}

func rwStmt(s syntax.Stmt) (syntax.Stmt, error) {
	switch s := s.(type) {
	case *syntax.AssignStmt:
		s.RHS = rwExpr(s.RHS)
		if s.Op == syntax.EQ {
			rwTarget(s.LHS)
			return s, nil
		}
		op := s.Op - syntax.PLUS_EQ + syntax.PLUS // the compiler's own mapping
		lhs := s.LHS
		for {
			p, ok := lhs.(*syntax.ParenExpr)
			if !ok {
				break
			}
			lhs = p.X
		}
		switch t := lhs.(type) {
		case *syntax.Ident:
			// x op= y  ->  x = _kl_aug(op, x, y)   (lists still extend in place)
			s.Op, s.LHS = syntax.EQ, t
			s.RHS = kcall("_kl_aug", s.OpPos, intLit(int64(op), s.OpPos), &syntax.Ident{NamePos: t.NamePos, Name: t.Name}, s.RHS)
			return s, nil
		case *syntax.IndexExpr:
			// a[i] op= y  ->  _kl_augindex(a, i, op, y)
			call := kcall("_kl_augindex", s.OpPos, rwExpr(t.X), rwExpr(t.Y), intLit(int64(op), s.OpPos), s.RHS)
			return &syntax.ExprStmt{X: call}, nil
		default:
			return nil, fmt.Errorf("%s: augmented assignment to %T is not allowed", s.OpPos, lhs)
		}
	case *syntax.DefStmt:
		rwParams(s.Params)
		return s, rwStmts(s.Body)
	case *syntax.ExprStmt:
		s.X = rwExpr(s.X)
	case *syntax.ForStmt:
		rwTarget(s.Vars)
		s.X = rwExpr(s.X)
		return s, rwStmts(s.Body)
	case *syntax.WhileStmt:
		s.Cond = rwExpr(s.Cond)
		return s, rwStmts(s.Body)
	case *syntax.IfStmt:
		s.Cond = rwExpr(s.Cond)
		if err := rwStmts(s.True); err != nil {
			return nil, err
		}
		return s, rwStmts(s.False)
	case *syntax.ReturnStmt:
		s.Result = rwExpr(s.Result)
	case *syntax.LoadStmt:
		return nil, fmt.Errorf("%s: load is not allowed", s.Load)
	case *syntax.BranchStmt:
	default:
		return nil, fmt.Errorf("code: unsupported statement %T", s) // fail closed on a new form
	}
	return s, nil
}

// rwParams rewrites the default values of parameters, not the parameters.
func rwParams(ps []syntax.Expr) {
	for _, p := range ps {
		if b, ok := p.(*syntax.BinaryExpr); ok && b.Op == syntax.EQ {
			b.Y = rwExpr(b.Y)
		}
	}
}

// rwTarget rewrites the expressions inside an assignment target, not the
// target itself.
func rwTarget(e syntax.Expr) {
	switch e := e.(type) {
	case *syntax.IndexExpr:
		e.X, e.Y = rwExpr(e.X), rwExpr(e.Y)
	case *syntax.DotExpr:
		e.X = rwExpr(e.X)
	case *syntax.ParenExpr:
		rwTarget(e.X)
	case *syntax.TupleExpr:
		for _, x := range e.List {
			rwTarget(x)
		}
	case *syntax.ListExpr:
		for _, x := range e.List {
			rwTarget(x)
		}
	}
}

func rwExprs(es []syntax.Expr) {
	for i := range es {
		es[i] = rwExpr(es[i])
	}
}

// checkedBinaryOps are the operators routed through _kl_bin: all that make
// a new value (comparisons, in, and, or make a bool or return an operand).
var checkedBinaryOps = map[syntax.Token]bool{
	syntax.PLUS: true, syntax.MINUS: true, syntax.STAR: true, syntax.SLASH: true, syntax.SLASHSLASH: true,
	syntax.PERCENT: true, syntax.AMP: true, syntax.PIPE: true, syntax.CIRCUMFLEX: true, syntax.LTLT: true, syntax.GTGT: true,
}

func rwExpr(e syntax.Expr) syntax.Expr {
	switch e := e.(type) {
	case nil:
		return nil
	case *syntax.BinaryExpr:
		e.Y = rwExpr(e.Y)
		if e.Op == syntax.EQ { // name=value in a call or a def
			return e
		}
		e.X = rwExpr(e.X)
		if checkedBinaryOps[e.Op] {
			return kcall("_kl_bin", e.OpPos, intLit(int64(e.Op), e.OpPos), e.X, e.Y)
		}
	case *syntax.CallExpr:
		for i, a := range e.Args {
			switch a := a.(type) {
			case *syntax.UnaryExpr:
				if a.Op == syntax.STAR || a.Op == syntax.STARSTAR {
					a.X = kcall("_kl_spread", a.OpPos, rwExpr(a.X))
					continue
				}
			case *syntax.BinaryExpr:
				if a.Op == syntax.EQ {
					a.Y = rwExpr(a.Y)
					continue
				}
			}
			e.Args[i] = rwExpr(a)
		}
		if d, ok := e.Fn.(*syntax.DotExpr); ok {
			return kcall("_kl_method", d.Dot, append([]syntax.Expr{rwExpr(d.X), strLit(d.Name.Name, d.NamePos)}, e.Args...)...)
		}
		e.Fn = rwExpr(e.Fn)
	case *syntax.Comprehension:
		e.Body = rwExpr(e.Body)
		for _, cl := range e.Clauses {
			switch cl := cl.(type) {
			case *syntax.ForClause:
				rwTarget(cl.Vars)
				cl.X = rwExpr(cl.X)
			case *syntax.IfClause:
				cl.Cond = rwExpr(cl.Cond)
			}
		}
	case *syntax.CondExpr:
		e.Cond, e.True, e.False = rwExpr(e.Cond), rwExpr(e.True), rwExpr(e.False)
	case *syntax.DictExpr:
		for _, x := range e.List {
			if de, ok := x.(*syntax.DictEntry); ok {
				de.Key, de.Value = rwExpr(de.Key), rwExpr(de.Value)
			}
		}
	case *syntax.ListExpr:
		rwExprs(e.List)
	case *syntax.TupleExpr:
		rwExprs(e.List)
	case *syntax.ParenExpr:
		e.X = rwExpr(e.X)
	case *syntax.UnaryExpr:
		e.X = rwExpr(e.X)
		if e.Op == syntax.MINUS || e.Op == syntax.PLUS || e.Op == syntax.TILDE {
			return kcall("_kl_unary", e.OpPos, intLit(int64(e.Op), e.OpPos), e.X)
		}
	case *syntax.IndexExpr:
		e.X, e.Y = rwExpr(e.X), rwExpr(e.Y)
	case *syntax.SliceExpr:
		e.X, e.Lo, e.Hi, e.Step = rwExpr(e.X), rwExpr(e.Lo), rwExpr(e.Hi), rwExpr(e.Step)
		return kcall("_kl_charge", e.Lbrack, e)
	case *syntax.DotExpr:
		// x.name outside a call: a bound method taken as a value.
		return kcall("_kl_attr", e.Dot, rwExpr(e.X), strLit(e.Name.Name, e.NamePos))
	case *syntax.LambdaExpr:
		rwParams(e.Params)
		e.Body = rwExpr(e.Body)
	}
	return e
}

func kcall(fn string, pos syntax.Position, args ...syntax.Expr) *syntax.CallExpr {
	return &syntax.CallExpr{Fn: &syntax.Ident{NamePos: pos, Name: fn}, Lparen: pos, Args: args, Rparen: pos}
}

func intLit(v int64, pos syntax.Position) *syntax.Literal {
	return &syntax.Literal{Token: syntax.INT, TokenPos: pos, Raw: strconv.FormatInt(v, 10), Value: v}
}

func strLit(s string, pos syntax.Position) *syntax.Literal {
	return &syntax.Literal{Token: syntax.STRING, TokenPos: pos, Raw: strconv.Quote(s), Value: s}
}

// --- checked builtins ------------------------------------------------------

// materializers are the builtins whose result can be as large as the
// sequences they are given (range and string views are lazy and tiny until
// one of these makes them real): refused beforehand by the arguments'
// lengths.
var materializers = map[string]bool{"list": true, "tuple": true, "sorted": true, "reversed": true, "set": true,
	"dict": true, "enumerate": true, "zip": true, "bytes": true}

// printers build a string from their arguments' printed form: refused
// beforehand by that form's size.
var printers = map[string]bool{"str": true, "repr": true, "print": true, "fail": true}

// sandboxBuiltins is Starlark's universe with every builtin wrapped to
// charge its result, materializers and printers checked before they run,
// range capped, getattr returning checked methods, and the _kl_* helpers
// the rewriter calls.
func sandboxBuiltins() starlark.StringDict {
	pre := starlark.StringDict{}
	for name, v := range starlark.Universe {
		b, ok := v.(*starlark.Builtin)
		if !ok {
			pre[name] = v
			continue
		}
		pre[name] = starlark.NewBuiltin(name, func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, kw []starlark.Tuple) (starlark.Value, error) {
			a := acctOf(th)
			if materializers[name] {
				var est int64
				for _, x := range args {
					est += lenSize(x)
				}
				for _, kv := range kw {
					est += lenSize(kv[1])
				}
				if err := a.precheck(est); err != nil {
					return nil, err
				}
			}
			if printers[name] {
				var est int64
				for _, x := range args {
					est += deepSize(x, a.budget+1)
				}
				for _, kv := range kw {
					est += deepSize(kv[1], a.budget+1)
				}
				if err := a.precheck(est); err != nil {
					return nil, err
				}
			}
			switch name {
			case "range":
				// range is lazy, but anything that materializes it is charged;
				// cap it so a huge one is refused outright.
				v, err := starlark.Call(th, b, args, kw)
				if err == nil && int64(v.(starlark.Sequence).Len())*16 > a.budget {
					return nil, fmt.Errorf("range of %d elements exceeds code_max_memory", v.(starlark.Sequence).Len())
				}
				return v, err
			case "getattr":
				v, err := starlark.Call(th, b, args, kw)
				if err != nil || len(args) < 2 {
					return v, err
				}
				attr, _ := args[1].(starlark.String)
				return checkedAttr(args[0], string(attr), v), nil
			}
			v, err := starlark.Call(th, b, args, kw)
			if err != nil {
				return nil, err
			}
			return v, a.charge(shallowSize(v))
		})
	}
	pre["_kl_bin"] = starlark.NewBuiltin("operator", func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, _ []starlark.Tuple) (starlark.Value, error) {
		return checkedBinary(acctOf(th), opOf(args[0]), args[1], args[2])
	})
	pre["_kl_aug"] = starlark.NewBuiltin("augmented assignment", func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, _ []starlark.Tuple) (starlark.Value, error) {
		return checkedInplace(acctOf(th), opOf(args[0]), args[1], args[2])
	})
	pre["_kl_augindex"] = starlark.NewBuiltin("augmented assignment", func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, _ []starlark.Tuple) (starlark.Value, error) {
		x, i, op, y := args[0], args[1], opOf(args[2]), args[3]
		old, err := getIndex(x, i)
		if err != nil {
			return nil, err
		}
		v, err := checkedInplace(acctOf(th), op, old, y)
		if err != nil {
			return nil, err
		}
		return starlark.None, setIndex(x, i, v)
	})
	pre["_kl_unary"] = starlark.NewBuiltin("operator", func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, _ []starlark.Tuple) (starlark.Value, error) {
		v, err := starlark.Unary(opOf(args[0]), args[1])
		if err != nil {
			return nil, err
		}
		return v, acctOf(th).charge(shallowSize(v))
	})
	pre["_kl_method"] = starlark.NewBuiltin("method", func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, kw []starlark.Tuple) (starlark.Value, error) {
		return callMethod(th, args[0], string(args[1].(starlark.String)), args[2:], kw)
	})
	pre["_kl_attr"] = starlark.NewBuiltin("attribute", func(_ *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, _ []starlark.Tuple) (starlark.Value, error) {
		name := string(args[1].(starlark.String))
		v, err := getAttr(args[0], name)
		if err != nil {
			return nil, err
		}
		return checkedAttr(args[0], name, v), nil
	})
	pre["_kl_spread"] = starlark.NewBuiltin("spread", func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, _ []starlark.Tuple) (starlark.Value, error) {
		return args[0], acctOf(th).charge(lenSize(args[0]))
	})
	pre["_kl_charge"] = starlark.NewBuiltin("slice", func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, _ []starlark.Tuple) (starlark.Value, error) {
		return args[0], acctOf(th).charge(shallowSize(args[0]))
	})
	return pre
}

func opOf(v starlark.Value) syntax.Token {
	n, _ := starlark.AsInt32(v)
	return syntax.Token(n)
}

func getIndex(x, i starlark.Value) (starlark.Value, error) {
	switch x := x.(type) {
	case starlark.Mapping:
		v, found, err := x.Get(i)
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, fmt.Errorf("key %v not in %s", i, x.Type())
		}
		return v, nil
	case starlark.Indexable:
		n, err := starlark.AsInt32(i)
		if err != nil {
			return nil, fmt.Errorf("%s index: %s", x.Type(), err)
		}
		if n < 0 {
			n += x.Len()
		}
		if n < 0 || n >= x.Len() {
			return nil, fmt.Errorf("%s index %d out of range [0:%d]", x.Type(), n, x.Len())
		}
		return x.Index(n), nil
	}
	return nil, fmt.Errorf("unhandled index operation %s[%s]", x.Type(), i.Type())
}

func setIndex(x, i, v starlark.Value) error {
	switch x := x.(type) {
	case starlark.HasSetKey:
		return x.SetKey(i, v)
	case starlark.HasSetIndex:
		n, err := starlark.AsInt32(i)
		if err != nil {
			return err
		}
		if n < 0 {
			n += x.Len()
		}
		if n < 0 || n >= x.Len() {
			return fmt.Errorf("%s index %d out of range [0:%d]", x.Type(), n, x.Len())
		}
		return x.SetIndex(n, v)
	}
	return fmt.Errorf("%s value does not support item assignment", x.Type())
}

func getAttr(x starlark.Value, name string) (starlark.Value, error) {
	ha, ok := x.(starlark.HasAttrs)
	if !ok {
		return nil, fmt.Errorf("%s has no .%s field or method", x.Type(), name)
	}
	v, err := ha.Attr(name)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, fmt.Errorf("%s has no .%s field or method", x.Type(), name)
	}
	return v, nil
}

// checkedAttr is the value of recv.name as a script may hold it: a built-in
// method comes back wrapped so that calling it later runs the same checks
// as recv.name(...).
func checkedAttr(recv starlark.Value, name string, v starlark.Value) starlark.Value {
	if _, ok := v.(*starlark.Builtin); !ok {
		return v
	}
	return starlark.NewBuiltin(name, func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, kw []starlark.Tuple) (starlark.Value, error) {
		return callMethod(th, recv, name, args, kw)
	})
}

// precheck refuses an operation that would allocate n bytes beyond the budget.
func (a *acct) precheck(n int64) error {
	if n < 0 || a.used+n > a.budget {
		return fmt.Errorf("memory limit exceeded: the operation would allocate ~%d bytes (code_max_memory %d, %d used)", n, a.budget, a.used)
	}
	return nil
}

// checkedInplace is x op= y: a list extends in place by any iterable (as
// Starlark does), anything else is x op y.
func checkedInplace(a *acct, op syntax.Token, x, y starlark.Value) (starlark.Value, error) {
	if l, ok := x.(*starlark.List); ok && op == syntax.PLUS {
		if it, ok := y.(starlark.Iterable); ok {
			if err := a.precheck(lenSize(y)); err != nil {
				return nil, err
			}
			// Collect first: y may be l itself (l += l).
			var elems []starlark.Value
			iter := it.Iterate()
			var e starlark.Value
			for iter.Next(&e) {
				if elems = append(elems, e); len(elems)%1024 == 0 {
					if err := a.charge(1024 * 16); err != nil {
						iter.Done()
						return nil, err
					}
				}
			}
			iter.Done()
			for _, e := range elems {
				if err := l.Append(e); err != nil {
					return nil, err
				}
			}
			return l, a.charge(int64(len(elems)%1024) * 16)
		}
	}
	return checkedBinary(a, op, x, y)
}

// checkedBinary is x op y, refused beforehand when its estimated result
// does not fit the budget and charged after by the larger of the estimate
// and the result's own size.
func checkedBinary(a *acct, op syntax.Token, x, y starlark.Value) (starlark.Value, error) {
	if !checkedBinaryOps[op] {
		return nil, fmt.Errorf("operator %s is not allowed here", op)
	}
	var est int64
	switch op {
	case syntax.STAR:
		est = mulSize(x, y)
	case syntax.PLUS:
		lx, ex := seqSize(x)
		ly, ey := seqSize(y)
		if ex > 0 && ey > 0 {
			est = lx*ex + ly*ey
		} else if bx, by := intBits(x), intBits(y); bx > 0 && by > 0 {
			est = (max(bx, by) + 1) / 8
		}
	case syntax.PERCENT:
		if s, ok := x.(starlark.String); ok {
			est = int64(len(s)) + deepSize(y, a.budget+1)
		}
	case syntax.PIPE, syntax.AMP, syntax.MINUS, syntax.CIRCUMFLEX:
		est = lenSize(x) + lenSize(y)
	case syntax.LTLT:
		if bx := intBits(x); bx > 0 {
			est = bx/8 + 64 // Starlark refuses a shift of 512 bits or more
		}
	}
	if err := a.precheck(est); err != nil {
		if est < 0 && intBits(x) > 0 && intBits(y) > 0 {
			return nil, fmt.Errorf("integer too large: a product of more than %d bits", maxIntBits)
		}
		return nil, err
	}
	v, err := starlark.Binary(op, x, y)
	if err != nil {
		return nil, err
	}
	return v, a.charge(max(est, shallowSize(v)))
}

// lenSize is what a copy of v's elements costs: 48 bytes an element (a dict
// or set entry; a list element is 16).
func lenSize(v starlark.Value) int64 {
	switch v := v.(type) {
	case starlark.String:
		return int64(len(v))
	case starlark.Bytes:
		return int64(len(v))
	case starlark.Sequence:
		return int64(v.Len()) * 48
	case interface{ Len() int }:
		return int64(v.Len()) * 48
	}
	return 0
}

// seqSize is a sequence's length and the bytes per element.
func seqSize(v starlark.Value) (n, per int64) {
	switch v := v.(type) {
	case starlark.String:
		return int64(len(v)), 1
	case starlark.Bytes:
		return int64(len(v)), 1
	case *starlark.List:
		return int64(v.Len()), 16
	case starlark.Tuple:
		return int64(len(v)), 16
	}
	return 0, 0
}

func intBits(v starlark.Value) int64 {
	i, ok := v.(starlark.Int)
	if !ok {
		return 0
	}
	return int64(i.BigInt().BitLen()) + 1
}

func mulSize(x, y starlark.Value) int64 {
	if _, ok := x.(starlark.Int); ok {
		x, y = y, x
	}
	if n, ok := y.(starlark.Int); ok {
		if l, per := seqSize(x); per > 0 {
			k, ok := n.Int64()
			if !ok || k > math.MaxInt32 {
				return -1
			}
			if k <= 0 || l == 0 {
				return 0
			}
			if l*per > math.MaxInt64/k {
				return -1
			}
			return l * per * k
		}
		if bx := intBits(x); bx > 0 {
			if bx+intBits(y) > maxIntBits {
				return -1 // a CPU bomb too: big.Int.Mul cannot be interrupted
			}
			return (bx + intBits(y)) / 8
		}
	}
	return 0
}

// shallowSize charges a new value by its own size (elements are charged
// where they were made).
func shallowSize(v starlark.Value) int64 {
	switch v := v.(type) {
	case starlark.String:
		return int64(len(v))
	case starlark.Bytes:
		return int64(len(v))
	case starlark.Int:
		return int64(v.BigInt().BitLen() / 8)
	case *starlark.List:
		return int64(v.Len()) * 16
	case starlark.Tuple:
		return int64(len(v)) * 16
	case *starlark.Dict:
		return int64(v.Len()) * 48
	case *starlark.Set:
		return int64(v.Len()) * 48
	}
	return 0
}

// deepSize estimates the printed size of v, stopping once it passes limit
// (so cyclic and shared structures cost at most limit to measure).
func deepSize(v starlark.Value, limit int64) int64 {
	var n int64
	var walk func(v starlark.Value)
	walk = func(v starlark.Value) {
		if n > limit {
			return
		}
		switch v := v.(type) {
		case starlark.String:
			n += int64(len(v)) + 2
		case starlark.Bytes:
			n += int64(len(v)) + 3
		case starlark.Int:
			n += int64(v.BigInt().BitLen()/3) + 1
		case *starlark.List:
			n += 2
			for i := 0; i < v.Len() && n <= limit; i++ {
				n += 2
				walk(v.Index(i))
			}
		case starlark.Tuple:
			n += 2
			for _, x := range v {
				n += 2
				walk(x)
			}
		case *starlark.Dict:
			n += 2
			for _, kv := range v.Items() {
				n += 4
				walk(kv[0])
				walk(kv[1])
			}
		default:
			n += 32
		}
	}
	walk(v)
	return n
}

// methodCost is every built-in method a script can reach, each with the
// estimate of what it allocates, checked before it runs (nil: a small
// constant, or no more than the receiver, which the result charge after
// covers). A method missing here is refused: a new Starlark version cannot
// add an unchecked one (TestCodeMethodsAllVetted).
var methodCost = map[string]func(a *acct, recv starlark.Value, args starlark.Tuple, kw []starlark.Tuple) int64{
	// string and bytes
	"capitalize": recvSize, "lower": recvSize, "upper": recvSize, "title": recvSize,
	"strip": recvSize, "lstrip": recvSize, "rstrip": recvSize, "removeprefix": recvSize, "removesuffix": recvSize,
	"partition": recvSize, "rpartition": recvSize,
	"codepoint_ords": nil, "codepoints": nil, "elem_ords": nil, "elems": nil, // lazy views
	"count": nil, "endswith": nil, "find": nil, "index": nil, "rfind": nil, "rindex": nil, "startswith": nil,
	"isalnum": nil, "isalpha": nil, "isdigit": nil, "islower": nil, "isspace": nil, "istitle": nil, "isupper": nil,
	"split": splitCost, "rsplit": splitCost, "splitlines": splitCost,
	"join": joinCost, "replace": replaceCost, "format": formatCost,
	// list
	"append": nil, "insert": nil, "pop": nil, "remove": nil, "clear": nil,
	"extend": argsCost,
	// dict
	"get": nil, "popitem": nil, "setdefault": nil,
	"items": recvLenCost, "keys": recvLenCost, "values": recvLenCost,
	"update": argsCost,
	// set
	"add": nil, "discard": nil, "issubset": nil, "issuperset": nil, "isdisjoint": nil,
	"union": setOpCost, "intersection": setOpCost, "difference": setOpCost, "symmetric_difference": setOpCost,
}

func recvSize(_ *acct, recv starlark.Value, _ starlark.Tuple, _ []starlark.Tuple) int64 {
	if l, per := seqSize(recv); per > 0 {
		return l * per
	}
	return 0
}

func recvLenCost(_ *acct, recv starlark.Value, _ starlark.Tuple, _ []starlark.Tuple) int64 {
	return lenSize(recv)
}

func argsCost(_ *acct, _ starlark.Value, args starlark.Tuple, kw []starlark.Tuple) int64 {
	var est int64
	for _, x := range args {
		est += lenSize(x)
	}
	return est + int64(len(kw))*48
}

func setOpCost(a *acct, recv starlark.Value, args starlark.Tuple, kw []starlark.Tuple) int64 {
	return lenSize(recv) + argsCost(a, recv, args, kw)
}

// splitCost: at most one part per byte (or per separator), 16 bytes each
// plus the part's header.
func splitCost(_ *acct, recv starlark.Value, args starlark.Tuple, _ []starlark.Tuple) int64 {
	n, _ := seqSize(recv)
	sep := int64(1)
	if len(args) > 0 {
		if s, ok := args[0].(starlark.String); ok && len(s) > 0 {
			sep = int64(len(s))
		}
	}
	return (n/sep + 1) * 32
}

func joinCost(a *acct, recv starlark.Value, args starlark.Tuple, _ []starlark.Tuple) int64 {
	s, _ := recv.(starlark.String)
	if len(args) != 1 {
		return 0
	}
	var est int64
	it := starlark.Iterate(args[0])
	if it == nil {
		return 0
	}
	defer it.Done()
	var x starlark.Value
	for it.Next(&x) && est <= a.budget {
		est += int64(len(s)) + 16
		if xs, ok := x.(starlark.String); ok {
			est += int64(len(xs))
		}
	}
	return est
}

func replaceCost(_ *acct, recv starlark.Value, args starlark.Tuple, _ []starlark.Tuple) int64 {
	s, _ := recv.(starlark.String)
	if len(args) < 2 {
		return int64(len(s))
	}
	old, _ := args[0].(starlark.String)
	nw, _ := args[1].(starlark.String)
	count := int64(len(s)) + 1
	if len(old) > 0 {
		count = int64(len(s) / len(old))
	}
	return int64(len(s)) + count*int64(len(nw))
}

func formatCost(a *acct, recv starlark.Value, args starlark.Tuple, kw []starlark.Tuple) int64 {
	s, _ := recv.(starlark.String)
	// Each {} may print any argument, and a format string can name one
	// argument many times: the estimate is per replacement field.
	fields := int64(strings.Count(string(s), "{")) + 1
	var biggest int64
	for _, x := range args {
		biggest = max(biggest, deepSize(x, a.budget+1))
	}
	for _, kv := range kw {
		biggest = max(biggest, deepSize(kv[1], a.budget+1))
	}
	if biggest > 0 && fields > (a.budget+1)/biggest {
		return a.budget + 1
	}
	return int64(len(s)) + fields*biggest
}

// callMethod is recv.name(args...): refused beforehand when its estimate
// does not fit, and charged after by the larger of the estimate and the
// result's own size.
func callMethod(th *starlark.Thread, recv starlark.Value, name string, args starlark.Tuple, kw []starlark.Tuple) (starlark.Value, error) {
	a := acctOf(th)
	cost, vetted := methodCost[name]
	if !vetted {
		return nil, fmt.Errorf("%s.%s is not available in the sandbox", recv.Type(), name)
	}
	var est int64
	if cost != nil {
		est = cost(a, recv, args, kw)
	}
	if err := a.precheck(est); err != nil {
		return nil, err
	}
	fn, err := getAttr(recv, name)
	if err != nil {
		return nil, err
	}
	v, err := starlark.Call(th, fn, args, kw)
	if err != nil {
		return nil, err
	}
	return v, a.charge(max(est, shallowSize(v)))
}

// --- values ----------------------------------------------------------------

const maxDepth = 64

func toStarlark(v any, depth int) (starlark.Value, error) {
	if depth > maxDepth {
		return nil, errors.New("nested too deeply")
	}
	switch v := v.(type) {
	case nil:
		return starlark.None, nil
	case bool:
		return starlark.Bool(v), nil
	case string:
		return starlark.String(v), nil
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
			return starlark.MakeInt64(int64(v)), nil
		}
		return starlark.Float(v), nil
	case int:
		return starlark.MakeInt(v), nil
	case int64:
		return starlark.MakeInt64(v), nil
	case json.Number: // an input decoded in the sandbox worker
		if i, err := v.Int64(); err == nil {
			return starlark.MakeInt64(i), nil
		}
		f, err := v.Float64()
		if err != nil {
			return nil, err
		}
		return toStarlark(f, depth)
	case []any:
		elems := make([]starlark.Value, len(v))
		for i, x := range v {
			var err error
			if elems[i], err = toStarlark(x, depth+1); err != nil {
				return nil, err
			}
		}
		return starlark.NewList(elems), nil
	case map[string]any:
		d := starlark.NewDict(len(v))
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			x, err := toStarlark(v[k], depth+1)
			if err != nil {
				return nil, err
			}
			_ = d.SetKey(starlark.String(k), x)
		}
		return d, nil
	}
	return nil, fmt.Errorf("unsupported value of type %T", v)
}

func fromStarlark(v starlark.Value, depth int) (any, error) {
	if depth > maxDepth {
		return nil, errors.New("nested too deeply (or cyclic)")
	}
	switch v := v.(type) {
	case starlark.NoneType:
		return nil, nil
	case starlark.Bool:
		return bool(v), nil
	case starlark.String:
		return string(v), nil
	case starlark.Bytes:
		return string(v), nil
	case starlark.Int:
		if i, ok := v.Int64(); ok && i > -(1<<53) && i < 1<<53 {
			return float64(i), nil
		}
		f, _ := new(big.Float).SetInt(v.BigInt()).Float64()
		return f, nil
	case starlark.Float:
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("%v is not a JSON number", v)
		}
		return float64(v), nil
	case starlark.Indexable: // list, tuple
		if _, ok := v.(starlark.String); !ok {
			out := make([]any, v.Len())
			for i := range out {
				var err error
				if out[i], err = fromStarlark(v.Index(i), depth+1); err != nil {
					return nil, err
				}
			}
			return out, nil
		}
	case *starlark.Dict:
		out := make(map[string]any, v.Len())
		for _, kv := range v.Items() {
			k, ok := kv[0].(starlark.String)
			if !ok {
				return nil, fmt.Errorf("dict key %s is not a string", kv[0])
			}
			x, err := fromStarlark(kv[1], depth+1)
			if err != nil {
				return nil, err
			}
			out[string(k)] = x
		}
		return out, nil
	}
	return nil, fmt.Errorf("a %s cannot leave the script", v.Type())
}

func anySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// VettedMethods are the names of the built-in types' methods a script may
// reach, each with its cost estimate; any other method is refused.
func VettedMethods() []string {
	ms := make([]string, 0, len(methodCost))
	for m := range methodCost {
		ms = append(ms, m)
	}
	slices.Sort(ms)
	return ms
}
