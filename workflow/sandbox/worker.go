package sandbox

// The hard backstop for code nodes: each run happens in a worker process,
// the running binary re-executed (/proc/self/exe) with
// KAILASH_SANDBOX_WORKER=1 in an otherwise empty environment. The switch is
// read in this package's init, so any binary that links the runner (kailash
// itself, and every test binary) can play the worker; cmd/kailash also has
// a hidden `kailash sandbox-worker` subcommand that runs the same loop.
//
// The worker reads one job (JSON) on stdin, sets its own limits before it
// compiles the script — RLIMIT_DATA (what it has committed at start plus a
// headroom proportional to code_max_memory), RLIMIT_CPU (the node timeout)
// and a Go soft memory limit — runs it with the same accounting as in
// process, writes one reply (JSON) on stdout and exits. The runner kills it
// on context cancel or timeout, it dies with the runner (Pdeathsig), and a
// worker that dies (the accounting defeated, the rlimit hit) fails that one
// execution with a clear error while the runner keeps serving.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	sandboxEnv       = "KAILASH_SANDBOX_WORKER"
	sandboxParentEnv = "KAILASH_SANDBOX_PARENT"
	// sandboxHeadroom is what the worker may commit beyond its start and
	// beyond sandboxFactor x code_max_memory: the runtime, the compiled
	// script, the job and the reply.
	sandboxHeadroom = 96 << 20
	sandboxFactor   = 3
	stderrKeep      = 4 << 10
)

// Job is one run of a code node, as sent to the worker.
type Job struct {
	Node      string         `json:"node"`
	Code      string         `json:"code"`
	Input     map[string]any `json:"input"`
	Tenant    string         `json:"tenant"`
	User      string         `json:"user"`
	Roles     []string       `json:"roles"`
	MaxSteps  uint64         `json:"max_steps"`
	MaxMemory int64          `json:"max_memory"`
	// CPUSeconds bounds the worker's CPU time (RLIMIT_CPU); DataLimit, when
	// set, is its RLIMIT_DATA in bytes instead of the computed one.
	CPUSeconds uint64 `json:"cpu_seconds"`
	DataLimit  int64  `json:"data_limit,omitempty"`
}

type codeReply struct {
	Output map[string]any `json:"output,omitempty"`
	Error  string         `json:"error,omitempty"`
}

func init() {
	if os.Getenv(sandboxEnv) == "1" {
		os.Exit(WorkerMain())
	}
}

// WorkerMain is the worker: one job from stdin, one reply to stdout. It
// returns the exit code. It is meant to be started only by the runner
// (RunInWorker; the hidden `kailash sandbox-worker` subcommand).
func WorkerMain() int {
	if p := os.Getenv(sandboxParentEnv); p != "" && strconv.Itoa(os.Getppid()) != p {
		// The runner died before Pdeathsig was armed: nobody reads the reply.
		return 3
	}
	var job Job
	dec := json.NewDecoder(bufio.NewReader(os.Stdin))
	dec.UseNumber()
	if err := dec.Decode(&job); err != nil {
		fmt.Fprintf(os.Stderr, "sandbox worker: bad job: %v\n", err)
		return 2
	}
	if err := limitSelf(job); err != nil {
		fmt.Fprintf(os.Stderr, "sandbox worker: %v\n", err)
		return 2
	}
	out, err := execJob(context.Background(), job)
	reply := codeReply{Output: out}
	if err != nil {
		reply.Error, reply.Output = err.Error(), nil
	}
	w := bufio.NewWriter(os.Stdout)
	if err := json.NewEncoder(w).Encode(reply); err != nil {
		fmt.Fprintf(os.Stderr, "sandbox worker: reply: %v\n", err)
		return 2
	}
	if err := w.Flush(); err != nil {
		return 2
	}
	return 0
}

// limitSelf sets the worker's rlimits. RLIMIT_DATA counts the private
// writable memory the process has mapped, which for Go is the heap it has
// committed (its address-space reservations are not writable until used),
// so the limit is what the worker has at start plus a headroom: a Go
// process reserves far more address space than it uses, so RLIMIT_AS would
// have to be set from an unrelated number.
func limitSelf(job Job) error {
	data := job.DataLimit
	if data == 0 {
		cur, err := ProcStatusBytes("VmData")
		if err != nil {
			return err
		}
		mem := min(job.MaxMemory, math.MaxInt64/(2*sandboxFactor))
		data = cur + raceFactor*(sandboxFactor*mem+sandboxHeadroom)
		debug.SetMemoryLimit(sandboxFactor*mem + sandboxHeadroom/2)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_DATA, &syscall.Rlimit{Cur: uint64(data), Max: uint64(data)}); err != nil {
		return fmt.Errorf("RLIMIT_DATA: %w", err)
	}
	if job.CPUSeconds > 0 {
		if err := syscall.Setrlimit(syscall.RLIMIT_CPU, &syscall.Rlimit{Cur: job.CPUSeconds, Max: job.CPUSeconds}); err != nil {
			return fmt.Errorf("RLIMIT_CPU: %w", err)
		}
	}
	return nil
}

// ProcStatusBytes reads one "kB" field of /proc/self/status, in bytes
// (VmData: what the worker's RLIMIT_DATA is computed from).
func ProcStatusBytes(field string) (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/self/status %s: %w", field, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/self/status has no %s", field)
}

// execJob compiles and runs the job's script (in the worker).
func execJob(ctx context.Context, job Job) (map[string]any, error) {
	p, err := Compile(job.Code)
	if err != nil {
		return nil, err
	}
	return p.Run(ctx, job)
}

// RunInWorker runs one code node in a fresh worker process: the running
// binary re-executed, which any binary linking this package can be.
func RunInWorker(ctx context.Context, job Job) (map[string]any, error) {
	in, err := json.Marshal(job)
	if err != nil {
		return nil, fmt.Errorf("sandbox job: %w", err)
	}
	outCap := max(4<<20, 2*min(job.MaxMemory, math.MaxInt64/4)) + 1<<20
	stdout := &capBuffer{max: outCap}
	stderr := &tailBuffer{max: stderrKeep}

	// Pdeathsig follows the thread that started the child: keep this
	// goroutine on its thread until the child is gone, so the runtime
	// cannot retire that thread under a live worker.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.CommandContext(ctx, "/proc/self/exe", "sandbox-worker")
	cmd.Env = []string{sandboxEnv + "=1", sandboxParentEnv + "=" + strconv.Itoa(os.Getpid()), "GOMAXPROCS=2"}
	cmd.Stdin = bytes.NewReader(in)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	cmd.WaitDelay = 2 * time.Second
	err = cmd.Run()
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	if stdout.over {
		return nil, fmt.Errorf("sandbox worker: the result is larger than %d bytes", outCap)
	}
	if err != nil {
		return nil, workerDied(cmd.ProcessState, err, stderr.String(), job)
	}
	var reply codeReply
	dec := json.NewDecoder(bytes.NewReader(stdout.buf.Bytes()))
	dec.UseNumber()
	if err := dec.Decode(&reply); err != nil {
		return nil, fmt.Errorf("sandbox worker: unreadable reply: %w", err)
	}
	if reply.Error != "" {
		return nil, errors.New(reply.Error)
	}
	if _, err := fromJSONNumbers(reply.Output); err != nil {
		return nil, fmt.Errorf("sandbox worker: %w", err)
	}
	if reply.Output == nil {
		return nil, errors.New("sandbox worker: a reply without output")
	}
	return reply.Output, nil
}

// workerDied names why a worker ended without a reply.
func workerDied(ps *os.ProcessState, err error, stderr string, job Job) error {
	// Under RLIMIT_DATA a worker that runs out dies in the Go runtime:
	// "fatal error: runtime: out of memory", or, when the failed mapping is
	// one the collector needed, a SIGSEGV (or SIGBUS) inside the runtime. The worker
	// runs nothing but the interpreter, so a runtime crash is read as the
	// memory limit, and its first line is kept for the operator.
	first := firstLine(stderr)
	// A thread the runtime could not start (its stack is data too) reports
	// errno=12 (ENOMEM) and "fatal error: newosproc": the same limit.
	if strings.Contains(stderr, "out of memory") || strings.Contains(stderr, "cannot allocate memory") || strings.Contains(stderr, "failed to allocate") ||
		strings.Contains(stderr, "errno=12") || strings.Contains(stderr, "fatal error:") ||
		strings.HasPrefix(first, "SIG") || strings.HasPrefix(first, "unexpected fault address") || strings.Contains(stderr, "[signal ") ||
		// a signal crash whose first lines were not the usual ones still
		// ends in the runtime's register dump
		(strings.Contains(stderr, "\nrip ") && strings.Contains(stderr, "\ngs ")) {
		return fmt.Errorf("sandbox worker exceeded memory limit (code_max_memory %d bytes; the worker died: %s)", job.MaxMemory, first)
	}
	if ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			cpu := ps.UserTime() + ps.SystemTime()
			if job.CPUSeconds > 0 && cpu >= time.Duration(job.CPUSeconds)*time.Second-100*time.Millisecond {
				return fmt.Errorf("sandbox worker exceeded CPU limit (%ds)", job.CPUSeconds)
			}
			return fmt.Errorf("sandbox worker killed by %s", ws.Signal())
		}
	}
	if line := lastLine(stderr); line != "" {
		return fmt.Errorf("sandbox worker failed (%v): %s", err, line)
	}
	return fmt.Errorf("sandbox worker failed: %v", err)
}

func firstLine(s string) string {
	for l := range strings.SplitSeq(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return ""
}

func lastLine(s string) string {
	for _, l := range slicesBackward(strings.Split(strings.TrimSpace(s), "\n")) {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "goroutine ") {
			return l
		}
	}
	return ""
}

func slicesBackward(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[len(ss)-1-i] = s
	}
	return out
}

// fromJSONNumbers turns the json.Numbers of a decoded reply into float64,
// as everything else in the runner carries numbers.
func fromJSONNumbers(v any) (any, error) {
	switch v := v.(type) {
	case json.Number:
		return v.Float64()
	case []any:
		for i := range v {
			x, err := fromJSONNumbers(v[i])
			if err != nil {
				return nil, err
			}
			v[i] = x
		}
	case map[string]any:
		for k := range v {
			x, err := fromJSONNumbers(v[k])
			if err != nil {
				return nil, err
			}
			v[k] = x
		}
	}
	return v, nil
}

// capBuffer keeps up to max bytes and records that more came.
type capBuffer struct {
	buf  bytes.Buffer
	max  int64
	over bool
}

func (b *capBuffer) Write(p []byte) (int, error) {
	if int64(b.buf.Len())+int64(len(p)) > b.max {
		b.over = true
		return 0, io.ErrShortWrite
	}
	return b.buf.Write(p)
}

// tailBuffer keeps the first and the last max bytes written (a Go fatal
// error names its cause first, then dumps goroutines).
type tailBuffer struct {
	head, buf []byte
	max       int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	if n := min(b.max-len(b.head), len(p)); n > 0 {
		b.head = append(b.head, p[:n]...)
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-b.max:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string { return string(b.head) + "\n" + string(b.buf) }
