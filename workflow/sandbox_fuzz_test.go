package workflow

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/workflow/sandbox"
)

// The bound FuzzCodeNodeMemory holds the accounting to: everything one run
// allocates (Go's cumulative heap allocation, garbage included) is at most
// fuzzFactor x code_max_memory + fuzzSlack. The factor covers what is
// charged after it is made (a list's doubling growth, a result up to the
// size of its receiver) and the per-step charge being an average.
const (
	fuzzBudget = 1 << 20
	fuzzFactor = 4
	fuzzSlack  = 2 << 20
)

// progGen turns fuzz bytes into a Starlark program over four variables,
// drawing every expression form the rewriter handles: all binary operators
// and augmented assignments (on names and on index targets), method calls
// direct, bound and through getattr, builtins, spreads, slices,
// comprehensions, lambdas, unary operators, and loops around them.
type progGen struct {
	data []byte
	pos  int
}

func (g *progGen) byte() int {
	if g.pos >= len(g.data) {
		return 0
	}
	b := g.data[g.pos]
	g.pos++
	return int(b)
}

func (g *progGen) pick(xs []string) string { return xs[g.byte()%len(xs)] }

func (g *progGen) v() string { return fmt.Sprintf("v%d", g.byte()%4) }

func (g *progGen) n() string {
	return fmt.Sprint((g.byte() % 64) * []int{1, 10, 100, 1000}[g.byte()%4])
}

var (
	fuzzOps      = []string{"+", "-", "*", "/", "//", "%", "&", "|", "^", "<<", ">>"}
	fuzzBuiltins = []string{"list", "tuple", "sorted", "reversed", "set", "dict", "enumerate", "zip", "bytes", "str", "repr", "print", "len", "range", "min", "max", "any", "all", "int", "hash", "dir", "type"}
)

func fuzzMethods() []string { return sandbox.VettedMethods() }

func (g *progGen) expr() string {
	switch g.byte() % 14 {
	case 0:
		return g.v() + " " + g.pick(fuzzOps) + " " + g.v()
	case 1:
		return g.v() + " * " + g.n()
	case 2:
		return "[" + g.v() + "] * " + g.n()
	case 3:
		return g.v() + "." + g.pick(fuzzMethods()) + "(" + g.v() + ")"
	case 4:
		return "getattr(" + g.v() + ", '" + g.pick(fuzzMethods()) + "')(" + g.v() + ")"
	case 5:
		return g.pick(fuzzBuiltins) + "(" + g.v() + ")"
	case 6:
		return "'{}{0}{0}'.format(" + g.v() + ")"
	case 7:
		return "[" + g.v() + " for _j in range(" + g.n() + ")]"
	case 8:
		return "(lambda *_x: _x)(*" + g.v() + ")"
	case 9:
		return g.v() + "[::" + fmt.Sprint(g.byte()%3+1) + "]"
	case 10:
		return "-" + g.v()
	case 11:
		return "'%s%s' % (" + g.v() + ", " + g.v() + ")"
	case 12:
		return "range(" + g.n() + ")"
	default:
		return "{'k': " + g.v() + ", 'j': " + g.v() + "}"
	}
}

func (g *progGen) stmt(depth int) string {
	switch g.byte() % 8 {
	case 0, 1:
		return g.v() + " = " + g.expr()
	case 2:
		return g.v() + " " + g.pick(fuzzOps) + "= " + g.v()
	case 3:
		return "_t = " + g.v() + "\nif type(_t) in ('list', 'dict') and len(_t) > 0:\n  _t[" + g.pick([]string{"0", "'k'"}) + "] " + g.pick(fuzzOps) + "= " + g.v()
	case 4:
		return "_f = " + g.v() + "." + g.pick(fuzzMethods()) + "\n" + g.v() + " = _f(" + g.v() + ")"
	case 5:
		if depth < 2 {
			body := strings.ReplaceAll(g.stmt(depth+1), "\n", "\n  ")
			return "for _i in range(" + fmt.Sprint(g.byte()%40+1) + "):\n  " + body
		}
		return g.v() + ".append(" + g.v() + ")"
	case 6:
		return g.v() + " = " + g.v() + " + " + g.v()
	default:
		return g.v() + ".extend(" + g.v() + ")"
	}
}

// program is the generated script. A statement that fails (a type error)
// ends the run, which only makes it allocate less.
func (g *progGen) program() string {
	var b strings.Builder
	b.WriteString("v0 = 'x' * 1000\nv1 = [1, 2, 3]\nv2 = {'k': 'v'}\nv3 = 7\n")
	for i := 0; i < 12 && g.pos < len(g.data); i++ {
		b.WriteString(g.stmt(0) + "\n")
	}
	return b.String()
}

// FuzzCodeNodeMemory runs generated programs (and the known bypasses as
// literal sources) in process under a 1 MiB budget and asserts that the
// measured allocation never exceeds the stated bound. A normal `go test`
// runs the seeds; `go test -fuzz FuzzCodeNodeMemory ./workflow/` explores.
func FuzzCodeNodeMemory(f *testing.F) {
	for _, tc := range memoryBypasses {
		f.Add([]byte("#src\n" + tc.src))
	}
	for _, seed := range []string{"\x00\x01\x02\x03", "\x05\x03\x01\x02\x07\x01", "\x02\x01\x09\x03\x04", "\x03\x00\x00\x01\x02\x03\x04", "\x05\x27\x04\x01\x02\x03"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var src string
		if rest, ok := strings.CutPrefix(string(data), "#src\n"); ok {
			src = rest
		} else {
			src = (&progGen{data: data}).program()
		}
		prep, err := prepareCode(map[string]any{"code": src})
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		job := sandbox.Job{Node: "fuzz", MaxSteps: 200_000, MaxMemory: fuzzBudget}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, runErr := prep.(*sandbox.Program).Run(ctx, job)
		runtime.ReadMemStats(&after)
		if got := int64(after.TotalAlloc - before.TotalAlloc); got > fuzzFactor*fuzzBudget+fuzzSlack {
			t.Fatalf("allocated %d bytes under a %d-byte budget (bound %d); error %v\n%s", got, fuzzBudget, fuzzFactor*fuzzBudget+fuzzSlack, runErr, src)
		}
	})
}
