package main

// Shutdown through the real Envoy: `kailash up` run as a real process (this
// test binary re-executed), a slow request in flight when SIGTERM arrives.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/envoy/envoytest"
	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// helperArgsEnv carries the arguments of a re-executed `kailash`: with it
// set, the test binary is the kailash binary (TestMain runs main() and
// exits, signals included) and runs no test.
const helperArgsEnv = "KAILASH_TEST_HELPER_ARGS"

// helperPprofEnv, set for a re-executed `kailash`, is an address it serves
// net/http/pprof on (the scale test's heap profiles of the xds process).
const helperPprofEnv = "KAILASH_TEST_HELPER_PPROF"

func TestMain(m *testing.M) {
	if args, ok := os.LookupEnv(helperArgsEnv); ok {
		os.Args = append([]string{"kailash"}, strings.Split(args, "\x1f")...)
		if addr := os.Getenv(helperPprofEnv); addr != "" {
			mux := http.NewServeMux()
			mux.HandleFunc("/debug/pprof/", httppprof.Index) // /debug/pprof/heap etc.
			mux.HandleFunc("/debug/pprof/profile", httppprof.Profile)
			go func() { _ = http.ListenAndServe(addr, mux) }()
		}
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// kailashProc is `kailash` running as a child process of the test.
type kailashProc struct {
	cmd  *exec.Cmd
	out  *testenv.LogBuffer // stdout and stderr
	done chan struct{}
	err  error
}

func startKailash(t *testing.T, args ...string) *kailashProc {
	t.Helper()
	return startKailashEnv(t, nil, args...)
}

// startKailashEnv is startKailash with more environment variables.
func startKailashEnv(t *testing.T, env []string, args ...string) *kailashProc {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(append(os.Environ(), env...), helperArgsEnv+"="+strings.Join(args, "\x1f"))
	k := &kailashProc{cmd: cmd, out: &testenv.LogBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = k.out, k.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { k.err = cmd.Wait(); close(k.done) }()
	t.Cleanup(func() {
		select {
		case <-k.done:
		default:
			_ = cmd.Process.Kill()
			<-k.done
		}
		if t.Failed() {
			t.Logf("kailash output:\n%s", k.out)
		}
	})
	return k
}

// children are the live pids whose parent is pid and whose command name
// starts with comm.
func children(t *testing.T, pid int, comm string) []int {
	t.Helper()
	out, err := testenv.Children(pid, func(c, _ string) bool { return strings.HasPrefix(c, comm) })
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// slowUpstream answers every request; with x-test-slow it waits that long
// first. The body is big enough that a cut answer shows.
func slowUpstream(t *testing.T) (addr string, body string) {
	t.Helper()
	body = strings.Repeat("kailash drains before it stops\n", 2048)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d, err := time.ParseDuration(r.Header.Get("x-test-slow")); err == nil {
			time.Sleep(d)
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, body)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), body
}

func devToken(t *testing.T, tenant string) string {
	t.Helper()
	pem, err := os.ReadFile("../../examples/keys/dev-signing-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	key, err := devtoken.Key(pem)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := devtoken.Mint(key, devtoken.Claims{Issuer: issuer, Audience: []string{audience}, Tenant: tenant, Subject: "alice", Roles: []string{"business_user"}})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// get sends one request through Envoy on a new connection.
func getVia(addr, host, token, slow string) (int, string, error) {
	req, err := http.NewRequest("POST", "http://"+addr+"/v1/workflows/hello/executions", strings.NewReader(`{}`))
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if slow != "" {
		req.Header.Set("x-test-slow", slow)
	}
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// upWithSlowUpstream starts `kailash up` with tenant acme forwarding to a
// slow upstream, and waits until a request is served through Envoy.
// waitUp waits until kailash up (k) serves tok's tenant host through
// Envoy at p with want (a status, and the body when set).
func waitUp(t *testing.T, k *kailashProc, p ports, host, tok string, want int, wantBody string) {
	t.Helper()
	testenv.Eventually(t, 90*time.Second, func() error {
		select {
		case <-k.done:
			t.Fatalf("kailash up exited: %v\n%s", k.err, k.out)
		default:
		}
		code, got, err := getVia(p.envoy, host, tok, "")
		if err != nil {
			return err
		}
		if code != want || (wantBody != "" && got != wantBody) {
			return fmt.Errorf("through Envoy: %d (%d bytes)", code, len(got))
		}
		return nil
	})
}

func upWithSlowUpstream(t *testing.T, shutdown string) (*kailashProc, ports, string, string) {
	t.Helper()
	envoytest.Binary(t)
	up, body := slowUpstream(t)
	p := freePorts(t)
	path := filepath.Join(t.TempDir(), "kailash.yaml")
	writeConfig(t, path, configYAML(t, p, "acme")+fmt.Sprintf("    upstreams: [%s]\n", up)+shutdown)
	k := startKailash(t, "up", "-c", path, "-log-level", "info")
	tok := devToken(t, "acme")
	waitUp(t, k, p, "acme.localhost", tok, 200, body)
	return k, p, tok, body
}

// TestUpDrainsOnSIGTERM: a request in flight when SIGTERM arrives gets its
// whole answer; new connections once the drain began are refused (or 503),
// never reset mid-answer; Envoy is gone when kailash has exited, which it
// does cleanly.
func TestUpDrainsOnSIGTERM(t *testing.T) {
	k, p, tok, body := upWithSlowUpstream(t, "shutdown: {drain_timeout: 20s}\n")
	envoys := children(t, k.cmd.Process.Pid, "envoy")
	if len(envoys) != 1 {
		t.Fatalf("kailash up has %d envoy children, want 1", len(envoys))
	}

	type result struct {
		code int
		body string
		err  error
	}
	slow := make(chan result, 1)
	go func() {
		code, got, err := getVia(p.envoy, "acme.localhost", tok, "2s")
		slow <- result{code, got, err}
	}()
	time.Sleep(500 * time.Millisecond) // the request has reached the upstream
	sent := time.Now()
	if err := k.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	// New connections after the drain began: refused or 503, never a
	// request served half. Once one is refused, none is served again.
	var mu sync.Mutex
	var refused, served, unavailable int
	stopProbe := make(chan struct{})
	probed := make(chan struct{})
	go func() {
		defer close(probed)
		for {
			select {
			case <-stopProbe:
				return
			case <-time.After(50 * time.Millisecond):
			}
			code, got, err := getVia(p.envoy, "acme.localhost", tok, "")
			mu.Lock()
			switch {
			case err != nil && isRefused(err):
				refused++
			case err != nil:
				t.Errorf("a new request during the drain failed other than refused: %v", err)
			case code == 503:
				unavailable++
			case code == 200 && got == body:
				if refused > 0 {
					t.Error("a new connection was served after the listener had stopped accepting")
				}
				served++
			default:
				t.Errorf("a new request during the drain: %d (%d bytes)", code, len(got))
			}
			mu.Unlock()
		}
	}()

	r := <-slow
	if r.err != nil {
		t.Fatalf("the request in flight at SIGTERM failed: %v", r.err)
	}
	if r.code != 200 || r.body != body {
		t.Fatalf("the request in flight at SIGTERM: %d, %d of %d bytes", r.code, len(r.body), len(body))
	}
	t.Logf("in-flight request answered in full %s after SIGTERM", time.Since(sent).Round(time.Millisecond))

	select {
	case <-k.done:
	case <-time.After(30 * time.Second):
		t.Fatal("kailash up did not exit within 30s of SIGTERM")
	}
	close(stopProbe)
	<-probed
	t.Logf("kailash exited %s after SIGTERM", time.Since(sent).Round(time.Millisecond))
	if k.err != nil {
		t.Fatalf("kailash up exited with %v", k.err)
	}
	mu.Lock()
	t.Logf("new connections during the drain: %d refused, %d answered 503, %d served (before the listener stopped)", refused, unavailable, served)
	if refused+unavailable == 0 {
		t.Error("no new connection was refused during the drain")
	}
	mu.Unlock()
	for _, pid := range envoys {
		if alive(pid) {
			t.Errorf("envoy (pid %d) is still running after kailash up exited", pid)
		}
	}
	if !strings.Contains(k.out.String(), "Envoy drained") {
		t.Errorf("no drain reported in the log")
	}
	for _, addr := range []string{p.envoy, p.admin, p.authz, p.runner, p.xds} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after up exited", addr)
		}
	}
}

// TestUpSecondSignalStopsAtOnce: with a request in flight longer than
// anyone wants to wait, a second SIGTERM ends the drain at once, and no
// Envoy is left.
func TestUpSecondSignalStopsAtOnce(t *testing.T) {
	k, p, tok, _ := upWithSlowUpstream(t, "shutdown: {drain_timeout: 60s}\n")
	envoys := children(t, k.cmd.Process.Pid, "envoy")
	go func() { _, _, _ = getVia(p.envoy, "acme.localhost", tok, "50s") }()
	time.Sleep(500 * time.Millisecond)
	if err := k.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The first signal drains: kailash waits for the 50s request.
	testenv.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(k.out.String(), "draining Envoy") {
			return errors.New("no drain started yet")
		}
		return nil
	})
	select {
	case <-k.done:
		t.Fatalf("kailash exited before the request in flight finished: %v", k.err)
	case <-time.After(time.Second):
	}
	second := time.Now()
	if err := k.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-k.done:
	case <-time.After(15 * time.Second):
		t.Fatal("kailash did not stop within 15s of a second SIGTERM")
	}
	t.Logf("stopped %s after the second signal", time.Since(second).Round(time.Millisecond))
	for _, pid := range envoys {
		if alive(pid) {
			t.Errorf("envoy (pid %d) is still running", pid)
		}
	}
}

func isRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}

// readyz is the status of addr's /readyz.
func readyz(addr string) int {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestComponentAloneDrains: `kailash runner` alone reports not ready at
// once on SIGTERM, keeps serving for shutdown.pre_stop_delay, then exits
// cleanly.
func TestComponentAloneDrains(t *testing.T) {
	p := freePorts(t)
	path := filepath.Join(t.TempDir(), "kailash.yaml")
	// Alone: no authz serves the identity keys, and a runner that cannot
	// verify any caller is not ready (its identity_jwks check), so this
	// runner trusts the gateway's headers instead.
	body := strings.Replace(configYAML(t, p, "acme"), `, identity_jwks: "http://`+p.authzHTTP+`/auth/.well-known/jwks.json", identity_audience: kailash-runner`, "", 1)
	writeConfig(t, path, body+"shutdown: {pre_stop_delay: 2s}\n")
	k := startKailash(t, "runner", "-c", path)
	testenv.Eventually(t, 60*time.Second, func() error {
		if c := readyz(p.runner); c != 200 {
			return fmt.Errorf("runner /readyz: %d", c)
		}
		return nil
	})
	sent := time.Now()
	if err := k.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Second, func() error {
		if c := readyz(p.runner); c != 503 {
			return fmt.Errorf("runner /readyz after SIGTERM: %d, want 503", c)
		}
		return nil
	})
	// Still serving (health, the API) during the pre-stop delay.
	resp, err := http.Get("http://" + p.runner + "/healthz")
	if err != nil {
		t.Fatalf("runner stopped serving before its pre-stop delay: %v", err)
	}
	resp.Body.Close()
	select {
	case <-k.done:
	case <-time.After(20 * time.Second):
		t.Fatal("runner did not exit")
	}
	if waited := time.Since(sent); waited < 2*time.Second {
		t.Errorf("runner exited %s after SIGTERM, before its 2s pre-stop delay", waited)
	}
	if k.err != nil {
		t.Fatalf("runner exited with %v", k.err)
	}
}
