package workflow

import (
	"context"
	"math"
	"time"

	"github.com/kailash-gw/kailash/workflow/sandbox"
)

// The code node: a Starlark script, compiled and run by package sandbox
// (the rewriter that charges every allocation, the checked builtins, the
// worker process under rlimits).

// codeSandbox selects where code nodes run: in a worker process (the
// default, and the only mode the runner uses), or in process (tests and
// benchmarks that measure the accounting itself).
var codeSandbox = sandboxProcess

type sandboxMode int

const (
	sandboxProcess sandboxMode = iota
	sandboxInProcess
)

// sandboxDataLimit, when non-zero, replaces the worker's computed
// RLIMIT_DATA (tests: a worker whose accounting is "defeated").
var sandboxDataLimit int64

// prepareCode compiles config.code once (sandbox.Compile).
func prepareCode(cfg map[string]any) (any, error) {
	src, err := str(cfg, "code")
	if err != nil {
		return nil, err
	}
	p, err := sandbox.Compile(src)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// runCode runs the script with `parameters` (the node input) and `caller`
// predeclared; its output is {"result": the value the script left in result}.
// It runs in a worker process (sandbox.RunInWorker) unless a test or a
// benchmark chose in process.
func runCode(ctx context.Context, _ *Executor, c *call) (map[string]any, error) {
	l := c.ex.limits
	src, _ := str(c.node.cfg, "code")
	job := sandbox.Job{Node: c.node.id, Code: src, Input: c.input, Tenant: c.ex.c.Tenant, User: c.ex.c.User, Roles: c.ex.c.Roles,
		MaxSteps: l.CodeMaxSteps, MaxMemory: l.CodeMaxMemory}
	if codeSandbox == sandboxInProcess {
		return c.node.prep.(*sandbox.Program).Run(ctx, job)
	}
	timeout := l.NodeTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if timeout <= 0 || timeout > time.Hour {
		timeout = time.Hour
	}
	job.CPUSeconds = uint64(math.Ceil(timeout.Seconds())) + 1
	if sandboxDataLimit > 0 {
		job.DataLimit = sandboxDataLimit
	}
	return sandbox.RunInWorker(ctx, job)
}
