package envoy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// ErrNotFound means no Envoy binary was found; run `make envoy`.
var ErrNotFound = errors.New("envoy binary not found: run `make envoy` (or set ENVOY_BIN)")

// FindBinary returns the Envoy to run: $ENVOY_BIN, else `envoy` on PATH, else
// bin/envoy in the current directory or any parent (the repository root),
// else bin/envoy beside the running executable.
func FindBinary() (string, error) {
	if p := os.Getenv("ENVOY_BIN"); p != "" {
		if isExec(p) {
			return p, nil
		}
		return "", fmt.Errorf("ENVOY_BIN=%s is not an executable file", p)
	}
	if p, err := exec.LookPath("envoy"); err == nil {
		return p, nil
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			if p := filepath.Join(d, "bin", "envoy"); isExec(p) {
				return p, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if exe, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(exe), "envoy"); isExec(p) {
			return p, nil
		}
	}
	return "", ErrNotFound
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// Options for Start.
type Options struct {
	Binary    string // path of the envoy binary (FindBinary when empty)
	Bootstrap []byte // rendered bootstrap (see Bootstrap)
	// AdminAddr is where the admin interface listens; used for readiness.
	AdminAddr string
	// Log receives Envoy's output (nil: discarded).
	Log      io.Writer
	LogLevel string // default "warning"
	// Concurrency is the number of worker threads (default 2).
	Concurrency int
	// DrainTime is Envoy's --drain-time-s (default 15s, whole seconds): how
	// long connections of a listener that changed or is removed are given
	// before they are closed. The strategy is "immediate": every such
	// connection is asked to close (Connection: close, GOAWAY) at once,
	// after the request it is serving.
	DrainTime time.Duration
}

// DefaultDrainTime is Options.DrainTime when it is zero.
const DefaultDrainTime = 15 * time.Second

// Process is a running Envoy child.
type Process struct {
	cmd   *exec.Cmd
	dir   string
	admin string
	done  chan struct{}
	err   error
}

// Start runs Envoy with the bootstrap. The child is killed if this process
// dies (Pdeathsig) and is stopped (SIGTERM, then SIGKILL after 5s) when ctx is
// cancelled; Wait returns once it has exited. To stop without cutting
// requests in flight, call Drain first (see drain.go).
func Start(ctx context.Context, o Options) (*Process, error) {
	bin := o.Binary
	if bin == "" {
		var err error
		if bin, err = FindBinary(); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "kailash-envoy-")
	if err != nil {
		return nil, err
	}
	bp := filepath.Join(dir, "bootstrap.yaml")
	if err := os.WriteFile(bp, o.Bootstrap, 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	level := o.LogLevel
	if level == "" {
		level = "warning"
	}
	conc := o.Concurrency
	if conc == 0 {
		conc = 2
	}
	drain := o.DrainTime
	if drain <= 0 {
		drain = DefaultDrainTime
	}
	adminPath := filepath.Join(dir, "admin-address")
	cmd := exec.Command(bin,
		"-c", bp,
		"--log-level", level,
		"--concurrency", fmt.Sprint(conc),
		"--disable-hot-restart", // no shared memory: several Envoys can run side by side
		"--admin-address-path", adminPath,
		"--drain-time-s", fmt.Sprint(max(1, int(drain.Round(time.Second)/time.Second))),
		"--drain-strategy", "immediate",
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if o.Log != nil {
		cmd.Stdout, cmd.Stderr = o.Log, o.Log
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start envoy %s: %w", bin, err)
	}
	p := &Process{cmd: cmd, dir: dir, admin: o.AdminAddr, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		os.RemoveAll(dir)
		close(p.done)
	}()
	go func() {
		select {
		case <-ctx.Done():
			p.stop()
		case <-p.done:
		}
	}()
	return p, nil
}

func (p *Process) stop() { p.stopWithin(5 * time.Second) }

func (p *Process) stopWithin(grace time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Stop terminates Envoy and waits for it to exit.
func (p *Process) Stop() { p.stop() }

// Done is closed when Envoy has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait blocks until Envoy exits and returns its exit error.
func (p *Process) Wait() error { <-p.done; return p.err }

// Pid of the Envoy process.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// AdminAddr returns the admin address Envoy actually bound (it reads the
// file Envoy writes, so a :0 port works), waiting for it until ctx ends.
func (p *Process) AdminAddr(ctx context.Context) (string, error) {
	for {
		if b, err := os.ReadFile(filepath.Join(p.dir, "admin-address")); err == nil && len(b) > 0 {
			return strings.TrimSpace(string(b)), nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("envoy admin address: %w", ctx.Err())
		case <-p.done:
			return "", fmt.Errorf("envoy exited: %v", p.err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WaitReady polls the admin /ready endpoint until Envoy reports LIVE (its
// initial xDS fetch is done) or ctx ends.
func (p *Process) WaitReady(ctx context.Context) error {
	addr, err := p.AdminAddr(ctx)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get("http://" + addr + "/ready")
		if err == nil {
			line, _ := bufio.NewReader(resp.Body).ReadString('\n')
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.TrimSpace(line) == "LIVE" {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("envoy not ready: %w", ctx.Err())
		case <-p.done:
			return fmt.Errorf("envoy exited before ready: %v", p.err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
