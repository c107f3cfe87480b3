package workflow

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/workflow/sandbox"
)

// memoryBypasses are programs that escaped the old, syntax-only accounting
// (issue 16, bypass 1). Each allocates well past an 8 MiB budget (tens to
// hundreds of MB, not more, so the old code finishes instead of crashing
// the test) and must now fail with a budget error.
var memoryBypasses = []struct{ name, src, want string }{
	{"index augmented repeat", "a = ['x' * 1000]\na[0] *= 100000\nresult = len(a[0])", "memory limit exceeded"},
	{"index augmented concat", "s = 'x' * 1000000\na = ['']\nfor i in range(30):\n  a[0] += s\nresult = len(a[0])", "memory limit exceeded"},
	{"dict augmented concat", "s = 'x' * 1000000\nd = {'k': ''}\nfor i in range(30):\n  d['k'] += s\nresult = len(d['k'])", "memory limit exceeded"},
	{"bound method", "l = [0] * 1000\nf = l.extend\nfor i in range(13):\n  f(l)\nresult = len(l)", "memory limit exceeded"},
	{"getattr method", "l = [0] * 1000\nf = getattr(l, 'extend')\nfor i in range(13):\n  f(l)\nresult = len(l)", "memory limit exceeded"},
	{"bound join", "s = 'x' * 100000\nj = ','.join\nresult = len(j([s] * 1000))", "memory limit exceeded"},
	{"int growth through index", "a = [3]\nfor i in range(20):\n  a[0] *= a[0]\nresult = 1", "integer too large"},
	{"star args", "def f(*a):\n  return a\nbig = [0] * 100000\nkeep = []\nfor i in range(100):\n  keep.append(f(*big))\nresult = len(keep)", "memory limit exceeded"},
	{"set union", "s = set(range(100000))\nkeep = []\nfor i in range(20):\n  keep.append(s | s)\nresult = len(keep)", "memory limit exceeded"},
	{"print shared list", "s = 'x' * 100000\nl = [s] * 1000\nprint(l)\nresult = 1", "memory limit exceeded"},
	{"format repeated field", "s = 'x' * 100000\nresult = len(('{0}' * 1000).format(s))", "memory limit exceeded"},
	{"shadowed helper", "_kl_bin = lambda op, x, y: x\nresult = 1", "reserved"},
}

func withSandbox(t testing.TB, m sandboxMode) {
	old := codeSandbox
	codeSandbox = m
	t.Cleanup(func() { codeSandbox = old })
}

// TestCodeMemoryBypasses: each known bypass fails its execution with a
// budget error, in process (the accounting) and in the worker (the default).
func TestCodeMemoryBypasses(t *testing.T) {
	x := NewExecutor(ExecutorOptions{Limits: config.RunnerLimits{CodeMaxSteps: 1_000_000, CodeMaxMemory: 8 << 20}})
	for _, mode := range []sandboxMode{sandboxInProcess, sandboxProcess} {
		withSandbox(t, mode)
		for _, tc := range memoryBypasses {
			t.Run(fmt.Sprintf("%d/%s", mode, tc.name), func(t *testing.T) {
				_, err := runOne(t, x, code(tc.src), nil)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got %v, want an error containing %q", err, tc.want)
				}
			})
		}
	}
}

// TestCodeWorkerRuns: scripts run in a worker by default, with the same
// results (numbers, nesting, the caller) as in process.
func TestCodeWorkerRuns(t *testing.T) {
	x := NewExecutor(ExecutorOptions{})
	src := "l = [1, 2]\nl += [3]\nd = {'a': l}\nd['a'][0] += 10\nf = l.append\nf(4)\nresult = {'l': l, 'who': caller['user'], 'big': parameters['n'] * 2, 'pid': parameters['pid']}"
	in := map[string]any{"n": 21.0, "pid": float64(os.Getpid())}
	for _, mode := range []sandboxMode{sandboxProcess, sandboxInProcess} {
		withSandbox(t, mode)
		out, err := runOne(t, x, code(src), in)
		if err != nil {
			t.Fatalf("mode %d: %v", mode, err)
		}
		got := fmt.Sprint(out["result"])
		if want := fmt.Sprintf("map[big:42 l:[11 2 3 4] pid:%d who:alice]", os.Getpid()); got != want {
			t.Fatalf("mode %d: got %s, want %s", mode, got, want)
		}
	}
}

// TestCodeWorkerDefeatedAccounting: a worker whose accounting is beaten
// (simulated by an RLIMIT_DATA far below what the budget allows) dies, that
// one execution fails with a clear error, and the runner serves the next.
func TestCodeWorkerDefeatedAccounting(t *testing.T) {
	withSandbox(t, sandboxProcess)
	x := NewExecutor(ExecutorOptions{Limits: config.RunnerLimits{CodeMaxMemory: 1 << 30}})
	start, err := sandbox.ProcStatusBytes("VmData")
	if err != nil {
		t.Fatal(err)
	}
	sandboxDataLimit = start + 48<<20 // the worker is the same binary: about the same start
	_, err = runOne(t, x, code("s = 'x' * (400 << 20)\nresult = len(s)"), nil)
	sandboxDataLimit = 0
	if err == nil || !strings.Contains(err.Error(), "sandbox worker exceeded memory limit") {
		t.Fatalf("got %v, want the worker's memory error", err)
	}
	out, err := runOne(t, x, code("result = 1 + 1"), nil)
	if err != nil || out["result"] != 2.0 {
		t.Fatalf("the next execution: %v %v", out, err)
	}
}

// TestCodeWorkerCancel: cancelling the execution kills its worker at once;
// no worker is left behind.
func TestCodeWorkerCancel(t *testing.T) {
	withSandbox(t, sandboxProcess)
	x := NewExecutor(ExecutorOptions{Limits: config.RunnerLimits{CodeMaxSteps: 1 << 62, CodeMaxMemory: 1 << 30, NodeTimeout: time.Hour, MaxExecutionTime: time.Hour}})
	w := mustCompile(t, Definition{Name: "spin", Nodes: []Node{code("while True:\n  pass\n")}})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := x.Run(ctx, w, nil, acme, RunOptions{})
		done <- err
	}()
	waitFor(t, "a worker to start", func() bool { return len(workerChildren(t, os.Getpid())) > 0 })
	cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "cancel") {
			t.Fatalf("got %v, want the cancellation", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the execution did not end on cancel")
	}
	waitFor(t, "no worker left", func() bool { return len(workerChildren(t, os.Getpid())) == 0 })
}

// TestCodeWorkerDiesWithRunner: a runner killed outright (SIGKILL, no
// cleanup) takes its worker with it (Pdeathsig).
func TestCodeWorkerDiesWithRunner(t *testing.T) {
	if os.Getenv("KAILASH_TEST_SPIN_RUNNER") == "1" {
		withSandbox(t, sandboxProcess)
		x := NewExecutor(ExecutorOptions{Limits: config.RunnerLimits{CodeMaxSteps: 1 << 62, NodeTimeout: time.Hour, MaxExecutionTime: time.Hour}})
		w := mustCompile(t, Definition{Name: "spin", Nodes: []Node{code("while True:\n  pass\n")}})
		_, err := x.Run(t.Context(), w, nil, acme, RunOptions{})
		t.Fatalf("the spinning run ended: %v", err)
	}
	runner := exec.Command("/proc/self/exe", "-test.run=^TestCodeWorkerDiesWithRunner$", "-test.count=1")
	runner.Env = append(os.Environ(), "KAILASH_TEST_SPIN_RUNNER=1")
	if err := runner.Start(); err != nil {
		t.Fatal(err)
	}
	defer runner.Process.Kill()
	var worker []int
	waitFor(t, "the runner's worker", func() bool { worker = workerChildren(t, runner.Process.Pid); return len(worker) > 0 })
	if err := runner.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	runner.Wait()
	waitFor(t, "the worker to die with its runner", func() bool {
		_, err := os.Stat(filepath.Join("/proc", strconv.Itoa(worker[0]), "cmdline"))
		if err != nil {
			return true
		}
		st, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(worker[0]), "stat"))
		return strings.Contains(string(st), ") Z ") // a zombie waiting for init is dead
	})
}

// workerChildren are the live sandbox workers whose parent is pid.
func workerChildren(t *testing.T, pid int) []int {
	t.Helper()
	out, err := testenv.Children(pid, func(_, cmdline string) bool { return strings.Contains(cmdline, "sandbox-worker") })
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkCodeNodeSandbox is one code node execution in a worker process
// (the runner's default) and in process: the difference is the worker's
// per-execution cost (fork/exec of the binary, job and reply over pipes).
func BenchmarkCodeNodeSandbox(b *testing.B) {
	w, err := Compile(Definition{Name: "code", Nodes: []Node{code("result = parameters.get('data', {})")}})
	if err != nil {
		b.Fatal(err)
	}
	x := NewExecutor(ExecutorOptions{})
	in := map[string]any{"data": map[string]any{"a": 1.0}}
	for _, m := range []struct {
		name string
		mode sandboxMode
	}{{"worker", sandboxProcess}, {"inprocess", sandboxInProcess}} {
		b.Run(m.name, func(b *testing.B) {
			withSandbox(b, m.mode)
			for b.Loop() {
				if _, err := x.Run(context.Background(), w, in, acme, RunOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
