package workflow

// The code node runs Starlark (go.starlark.net), a Python dialect with no
// file, network, clock or environment access to begin with; load() is
// refused. Two bounds make it safe to run a tenant's script in process:
//
//   - steps: thread.SetMaxExecutionSteps (runner.limits.code_max_steps);
//   - memory: an allocation budget (runner.limits.code_max_memory). Starlark
//     has no allocator hook, so the script is rewritten before compiling:
//     every operation whose result can be much larger than its operands
//     (x*n, x+y, "%s" % x, join, replace, format, str, repr) goes through a
//     checked builtin that estimates the result and refuses it before it is
//     made; every builtin and method result, and every slice, is charged
//     after; every step is charged a small constant for the small values it
//     may create. The budget counts bytes allocated, so it bounds the live
//     heap too; quadratic string building is charged in full.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"

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

type codePrep struct {
	prog        *starlark.Program
	predeclared starlark.StringDict // wrapped builtins, without the per-run names
}

// prepareCode parses config.code, refuses load(), rewrites it for memory
// accounting and compiles it once.
func prepareCode(cfg map[string]any) (any, error) {
	src, err := str(cfg, "code")
	if err != nil {
		return nil, err
	}
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
	return &codePrep{prog: prog, predeclared: pre}, nil
}

// runCode runs the script with `parameters` (the node input) and `caller`
// predeclared; its output is {"result": the value the script left in result}.
func runCode(ctx context.Context, _ *Executor, c *call) (map[string]any, error) {
	p := c.node.prep.(*codePrep)
	l := c.ex.limits
	params, err := toStarlark(c.input, 0)
	if err != nil {
		return nil, fmt.Errorf("parameters: %w", err)
	}
	callerV, _ := toStarlark(map[string]any{"tenant": c.ex.c.Tenant, "user": c.ex.c.User, "roles": anySlice(c.ex.c.Roles)}, 0)
	pre := make(starlark.StringDict, len(p.predeclared)+2)
	for k, v := range p.predeclared {
		pre[k] = v
	}
	pre["parameters"], pre["caller"] = params, callerV

	a := &acct{budget: l.CodeMaxMemory, maxSteps: l.CodeMaxSteps}
	th := &starlark.Thread{Name: c.node.id, Print: func(*starlark.Thread, string) {}}
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
			return nil, fmt.Errorf("%s: %s", ee.CallStack.At(0).Pos, ee.Msg)
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

func rwStmts(ss []syntax.Stmt) error {
	for _, s := range ss {
		if err := rwStmt(s); err != nil {
			return err
		}
	}
	return nil
}

func rwStmt(s syntax.Stmt) error {
	switch s := s.(type) {
	case *syntax.AssignStmt:
		rwTarget(s.LHS)
		s.RHS = rwExpr(s.RHS)
		fn := map[syntax.Token]string{syntax.PLUS_EQ: "_kl_add", syntax.STAR_EQ: "_kl_mul", syntax.PERCENT_EQ: "_kl_mod"}[s.Op]
		if fn != "" {
			if id, ok := s.LHS.(*syntax.Ident); ok {
				s.Op, s.RHS = syntax.EQ, kcall(fn, s.OpPos, &syntax.Ident{NamePos: id.NamePos, Name: id.Name}, s.RHS)
			} else {
				// a[i] op= y: bound y so one step can at most grow the target by
				// half the budget.
				s.RHS = kcall("_kl_guard", s.OpPos, s.RHS)
			}
		}
	case *syntax.DefStmt:
		for i := range s.Params {
			s.Params[i] = rwExpr(s.Params[i])
		}
		return rwStmts(s.Body)
	case *syntax.ExprStmt:
		s.X = rwExpr(s.X)
	case *syntax.ForStmt:
		rwTarget(s.Vars)
		s.X = rwExpr(s.X)
		return rwStmts(s.Body)
	case *syntax.WhileStmt:
		s.Cond = rwExpr(s.Cond)
		return rwStmts(s.Body)
	case *syntax.IfStmt:
		s.Cond = rwExpr(s.Cond)
		if err := rwStmts(s.True); err != nil {
			return err
		}
		return rwStmts(s.False)
	case *syntax.ReturnStmt:
		s.Result = rwExpr(s.Result)
	case *syntax.LoadStmt:
		return fmt.Errorf("%s: load is not allowed", s.Load)
	}
	return nil
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
		fn := map[syntax.Token]string{syntax.PLUS: "_kl_add", syntax.STAR: "_kl_mul", syntax.PERCENT: "_kl_mod"}[e.Op]
		if fn != "" {
			return kcall(fn, e.OpPos, e.X, e.Y)
		}
	case *syntax.CallExpr:
		rwExprs(e.Args)
		if d, ok := e.Fn.(*syntax.DotExpr); ok {
			name := &syntax.Literal{Token: syntax.STRING, TokenPos: d.NamePos, Raw: strconv.Quote(d.Name.Name), Value: d.Name.Name}
			return kcall("_kl_method", d.Dot, append([]syntax.Expr{rwExpr(d.X), name}, e.Args...)...)
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
	case *syntax.IndexExpr:
		e.X, e.Y = rwExpr(e.X), rwExpr(e.Y)
	case *syntax.SliceExpr:
		e.X, e.Lo, e.Hi, e.Step = rwExpr(e.X), rwExpr(e.Lo), rwExpr(e.Hi), rwExpr(e.Step)
		return kcall("_kl_charge", e.Lbrack, e)
	case *syntax.DotExpr:
		e.X = rwExpr(e.X)
	case *syntax.LambdaExpr:
		rwExprs(e.Params)
		e.Body = rwExpr(e.Body)
	}
	return e
}

func kcall(fn string, pos syntax.Position, args ...syntax.Expr) *syntax.CallExpr {
	return &syntax.CallExpr{Fn: &syntax.Ident{NamePos: pos, Name: fn}, Lparen: pos, Args: args, Rparen: pos}
}

// --- checked builtins ------------------------------------------------------

// sandboxBuiltins is Starlark's universe with every builtin wrapped to
// charge its result, range capped, str/repr checked before they run, and the
// _kl_* helpers the rewriter calls.
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
			for _, x := range args {
				if r, ok := x.(starlark.Sequence); ok && x.Type() == "range" {
					if err := a.precheck(int64(r.Len()) * 16); err != nil {
						return nil, err
					}
				}
			}
			if name == "str" || name == "repr" {
				for _, x := range args {
					if err := a.precheck(deepSize(x, a.budget+1)); err != nil {
						return nil, err
					}
				}
			}
			if name == "range" {
				// range is lazy, but anything that materializes it is charged;
				// cap it so a huge one is refused outright.
				v, err := starlark.Call(th, b, args, kw)
				if err == nil && int64(v.(starlark.Sequence).Len())*16 > a.budget {
					return nil, fmt.Errorf("range of %d elements exceeds code_max_memory", v.(starlark.Sequence).Len())
				}
				return v, err
			}
			v, err := starlark.Call(th, b, args, kw)
			if err != nil {
				return nil, err
			}
			return v, a.charge(shallowSize(v))
		})
	}
	pre["_kl_mul"] = starlark.NewBuiltin("*", checkedBinary(syntax.STAR))
	pre["_kl_add"] = starlark.NewBuiltin("+", checkedBinary(syntax.PLUS))
	pre["_kl_mod"] = starlark.NewBuiltin("%", checkedBinary(syntax.PERCENT))
	pre["_kl_method"] = starlark.NewBuiltin("method", callMethod)
	pre["_kl_charge"] = starlark.NewBuiltin("slice", func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, _ []starlark.Tuple) (starlark.Value, error) {
		return args[0], acctOf(th).charge(shallowSize(args[0]))
	})
	pre["_kl_guard"] = starlark.NewBuiltin("guard", func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, _ []starlark.Tuple) (starlark.Value, error) {
		a := acctOf(th)
		if n := deepSize(args[0], a.budget); n > a.budget/2 {
			return nil, fmt.Errorf("memory limit exceeded: an augmented assignment of ~%d bytes (code_max_memory %d)", n, a.budget)
		}
		return args[0], nil
	})
	return pre
}

// precheck refuses an operation that would allocate n bytes beyond the budget.
func (a *acct) precheck(n int64) error {
	if n < 0 || a.used+n > a.budget {
		return fmt.Errorf("memory limit exceeded: the operation would allocate ~%d bytes (code_max_memory %d, %d used)", n, a.budget, a.used)
	}
	return nil
}

func checkedBinary(op syntax.Token) func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error) {
	return func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, _ []starlark.Tuple) (starlark.Value, error) {
		x, y := args[0], args[1]
		a := acctOf(th)
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
		return v, a.charge(est)
	}
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

// callMethod is x.name(args...) with join, replace and format checked before
// they run, extend and update charged for what they add, and every result
// charged.
func callMethod(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, kw []starlark.Tuple) (starlark.Value, error) {
	recv, name := args[0], string(args[1].(starlark.String))
	rest := args[2:]
	a := acctOf(th)
	var est int64
	s, isStr := recv.(starlark.String)
	switch {
	case isStr && name == "join" && len(rest) == 1:
		it := starlark.Iterate(rest[0])
		if it != nil {
			var x starlark.Value
			for it.Next(&x) && est <= a.budget {
				if xs, ok := x.(starlark.String); ok {
					est += int64(len(xs)) + int64(len(s))
				}
			}
			it.Done()
		}
	case isStr && name == "replace" && len(rest) >= 2:
		old, _ := rest[0].(starlark.String)
		nw, _ := rest[1].(starlark.String)
		count := int64(len(s)) + 1
		if len(old) > 0 {
			count = int64(len(s) / len(old))
		}
		est = int64(len(s)) + count*int64(len(nw))
	case isStr && name == "format":
		est = int64(len(s))
		for _, x := range rest {
			est += deepSize(x, a.budget+1)
		}
		for _, kv := range kw {
			est += deepSize(kv[1], a.budget+1)
		}
	case (name == "extend" || name == "update") && len(rest) == 1:
		if sq, ok := rest[0].(starlark.Sequence); ok {
			est = int64(sq.Len()) * 48
		}
	}
	if err := a.precheck(est); err != nil {
		return nil, err
	}
	ha, ok := recv.(starlark.HasAttrs)
	if !ok {
		return nil, fmt.Errorf("%s has no .%s field or method", recv.Type(), name)
	}
	fn, err := ha.Attr(name)
	if err != nil {
		return nil, err
	}
	if fn == nil {
		return nil, fmt.Errorf("%s has no .%s field or method", recv.Type(), name)
	}
	v, err := starlark.Call(th, fn, rest, kw)
	if err != nil {
		return nil, err
	}
	return v, a.charge(est + shallowSize(v))
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
