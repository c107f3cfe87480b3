package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/workflow/store"
)

// buildKailash builds the binary once per test binary run.
var buildKailash = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "kailash-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "kailash")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/kailash")
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// runnerProc is a `kailash runner` child process.
type runnerProc struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

func startRunner(t *testing.T, bin, cfg, addr string) *runnerProc {
	t.Helper()
	cmd := exec.Command(bin, "runner", "-c", cfg)
	logf, err := os.OpenFile(cfg+".log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &runnerProc{cmd: cmd, addr: addr, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	testenv.Eventually(t, 20*time.Second, func() error {
		select {
		case <-p.done:
			b, _ := os.ReadFile(cfg + ".log")
			t.Fatalf("runner exited:\n%s", b)
		default:
		}
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	return p
}

func (p *runnerProc) do(t *testing.T, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+p.addr+path, strings.NewReader(body))
	req.Header.Set("x-kailash-tenant", "acme")
	req.Header.Set("x-kailash-user", "alice")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

// crashBackends are the runner's durable stores the crash tests kill it on:
// each returns the runner config lines that select it.
var crashBackends = map[string]func(t *testing.T) string{
	"sqlite": func(t *testing.T) string { return "  data_dir: data\n" },
	"postgres": func(t *testing.T) string {
		return "  postgres_dsn: " + testenv.StartPostgres(t).DSN + "\n  lease_ttl: 2s\n"
	},
}

// kill -9 the runner in the middle of an execution; the next runner marks
// it interrupted, so no execution stays "running" for ever.
func TestCrashMidExecutionMarkedInterrupted(t *testing.T) {
	testenv.SkipShort(t, "builds and runs the binary")
	bin, err := buildKailash()
	if err != nil {
		t.Fatal(err)
	}
	for name, backend := range crashBackends {
		t.Run(name, func(t *testing.T) {
			arrived := make(chan struct{}, 1)
			host := upstream(t, func(w http.ResponseWriter, r *http.Request) {
				select {
				case arrived <- struct{}{}:
				default:
				}
				<-r.Context().Done() // slow: never answers
			})
			dir := t.TempDir()
			addr := testenv.FreeAddr(t)
			cfg := filepath.Join(dir, "kailash.yaml")
			yaml := "envoy:\n  listen: 127.0.0.1:1\nxds:\n  grpc: 127.0.0.1:2\nauthz:\n  grpc: 127.0.0.1:3\n" +
				"runner:\n  http: " + addr + "\n" + backend(t) + "  http_allow: [" + host + "]\n" +
				"  limits:\n    max_execution_time: 5m\n    node_timeout: 5m\n" +
				"tenants:\n  - id: acme\n    domains: [acme.localhost]\n    jwt:\n      issuer: https://issuer.test\n      audiences: [kailash]\n      jwks_url: https://issuer.test/jwks.json\n"
			if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			p := startRunner(t, bin, cfg, addr)
			def := `{"name":"slow","nodes":[{"id":"first","type":"identity"},{"id":"wait","type":"http","config":{"url":"http://` + host + `/slow"}}],"connections":[{"from":"first","to":"wait"}]}`
			if code, body := p.do(t, "POST", "/v1/workflows", def); code != 201 {
				t.Fatalf("create: %d %v", code, body)
			}
			code, body := p.do(t, "POST", "/v1/workflows/slow/executions?async=true", `{"n":1}`)
			if code != 202 {
				t.Fatalf("start: %d %v", code, body)
			}
			id := body["execution_id"].(string)
			select {
			case <-arrived: // the http node is waiting: mid-execution
			case <-time.After(20 * time.Second):
				t.Fatal("the execution never reached its slow node")
			}
			if _, body := p.do(t, "GET", "/v1/workflows/slow/executions/"+id, ""); body["status"] != store.StatusRunning {
				t.Fatalf("before the crash: %v", body)
			}
			if err := p.cmd.Process.Kill(); err != nil { // SIGKILL: no shutdown code runs
				t.Fatal(err)
			}
			<-p.done

			// SQLite: the restarted runner holds the data directory alone and
			// interrupts at once. PostgreSQL: it takes the execution over once
			// the dead runner's lease ends (lease_ttl), naming that runner.
			p = startRunner(t, bin, cfg, addr)
			testenv.Eventually(t, 30*time.Second, func() error {
				code, body = p.do(t, "GET", "/v1/workflows/slow/executions/"+id, "")
				if code != 200 || body["status"] != store.StatusInterrupted || body["finished_at"] == nil {
					return fmt.Errorf("after the restart: %d %v", code, body)
				}
				if name == "postgres" && !strings.Contains(fmt.Sprint(body["error"]), "stopped renewing its lease") {
					return fmt.Errorf("the reason does not name the dead runner: %v", body["error"])
				}
				return nil
			})
			// What was recorded before the crash is still there.
			nodes, _ := body["nodes"].([]any)
			if len(nodes) != 1 || nodes[0].(map[string]any)["node"] != "first" {
				t.Fatalf("node results: %v", body["nodes"])
			}
			// The restarted runner works.
			if code, body := p.do(t, "POST", "/v1/workflows", strings.Replace(def, `"slow"`, `"slow2"`, 1)); code != 201 {
				t.Fatalf("create after restart: %d %v", code, body)
			}
		})
	}
}

// 1,000 executions at the same time, all running at once (the upstream
// answers none until every one has arrived), none failing.
func TestThousandConcurrentExecutions(t *testing.T) {
	testenv.SkipShort(t, "1,000 executions")
	const n = 1000
	var count atomic.Int32
	all := make(chan struct{})
	host := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		if count.Add(1) == n {
			close(all)
		}
		select {
		case <-all:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"ok":true}`))
		case <-r.Context().Done():
		}
	})
	s := newTestServerCfg(t, nil, config.Runner{DataDir: t.TempDir(), HTTPAllow: []string{host},
		Limits: config.RunnerLimits{MaxConcurrentExecutions: n, MaxExecutionTime: 2 * time.Minute, NodeTimeout: 2 * time.Minute}})
	h := s.Handler()
	c := apiClient{t, h, map[string]string{"x-kailash-tenant": "acme", "x-kailash-user": "alice"}}
	def := `{"name":"fan","nodes":[{"id":"a","type":"transform","config":{"set":{"k":1}}},{"id":"call","type":"http","config":{"url":"http://` + host + `/"}},{"id":"out","type":"transform"}],
		"connections":[{"from":"a","to":"call"},{"from":"call/body","to":"out/body"}]}`
	if code, body := c.do("POST", "/v1/workflows", def); code != 201 {
		t.Fatalf("create: %d %v", code, body)
	}
	var wg sync.WaitGroup
	var failed atomic.Int32
	errs := make(chan string, 10)
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			req := httptest.NewRequest("POST", "/v1/workflows/fan/executions", strings.NewReader(fmt.Sprintf(`{"i":%d}`, i)))
			req.Header.Set("x-kailash-tenant", "acme")
			req.Header.Set("x-kailash-user", "alice")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"ok":true`) {
				failed.Add(1)
				select {
				case errs <- fmt.Sprintf("%d %s", rec.Code, rec.Body):
				default:
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d executions failed", f, n)
	}
	t.Logf("%d concurrent executions in %s", n, time.Since(start))
	if s.exec.Running("acme") != 0 {
		t.Fatalf("%d still counted as running", s.exec.Running("acme"))
	}
	list, err := s.store.ListExecutions(context.Background(), "acme", "fan", 2*n)
	if err != nil || len(list) != n {
		t.Fatalf("recorded %d executions: %v", len(list), err)
	}
	for _, e := range list {
		if e.Status != store.StatusCompleted {
			t.Fatalf("execution %s: %s", e.ID, e.Status)
		}
	}
}

// kill -9 the runner under load (group commit: many executions' writes
// share each transaction): every execution it acknowledged — a 200 with
// its result, a 202 with its id — is there after the restart, the 200s
// completed with the output they answered; none stays running.
func TestCrashUnderLoadKeepsAcknowledged(t *testing.T) {
	testenv.SkipShort(t, "builds and runs the binary under load")
	bin, err := buildKailash()
	if err != nil {
		t.Fatal(err)
	}
	for name, backend := range crashBackends {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			addr := testenv.FreeAddr(t)
			cfg := filepath.Join(dir, "kailash.yaml")
			yaml := "envoy:\n  listen: 127.0.0.1:1\nxds:\n  grpc: 127.0.0.1:2\nauthz:\n  grpc: 127.0.0.1:3\n" +
				"runner:\n  http: " + addr + "\n" + backend(t) + "  limits:\n    max_concurrent_executions: 1000\n" +
				"tenants:\n  - id: acme\n    domains: [acme.localhost]\n    jwt:\n      issuer: https://issuer.test\n      audiences: [kailash]\n      jwks_url: https://issuer.test/jwks.json\n"
			if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			p := startRunner(t, bin, cfg, addr)
			def := `{"name":"three","nodes":[{"id":"a","type":"transform","config":{"set":{"greeting":"hello"}}},{"id":"b","type":"identity"},{"id":"c","type":"transform"}],` +
				`"connections":[{"from":"a","to":"b"},{"from":"b","to":"c"}]}`
			if code, body := p.do(t, "POST", "/v1/workflows", def); code != 201 {
				t.Fatalf("create: %d %v", code, body)
			}

			type ack struct {
				id    string
				async bool
				n     float64 // the input's n, echoed in a synchronous result
			}
			var (
				mu     sync.Mutex
				acked  []ack
				stop   atomic.Bool
				wg     sync.WaitGroup
				client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}, Timeout: 30 * time.Second}
				killed = make(chan error, 1)
			)
			for g := range 16 {
				wg.Go(func() {
					for i := 0; !stop.Load(); i++ {
						n := float64(g*1_000_000 + i)
						async := i%10 == 9
						path := "/v1/workflows/three/executions"
						if async {
							path += "?async=true"
						}
						req, _ := http.NewRequest("POST", "http://"+addr+path, strings.NewReader(fmt.Sprintf(`{"n":%d}`, int64(n))))
						req.Header.Set("x-kailash-tenant", "acme")
						req.Header.Set("x-kailash-user", "alice")
						resp, err := client.Do(req)
						if err != nil {
							continue // the kill: not acknowledged
						}
						var body map[string]any
						err = json.NewDecoder(resp.Body).Decode(&body)
						resp.Body.Close()
						if err != nil || (resp.StatusCode != 200 && resp.StatusCode != 202) {
							continue // cut mid-answer, or refused: not acknowledged
						}
						id, _ := body["execution_id"].(string)
						if resp.StatusCode == 200 {
							out, _ := body["output"].(map[string]any)
							if out["n"] != n {
								t.Errorf("execution %s answered %v for n=%v", id, body["output"], n)
							}
						}
						mu.Lock()
						acked = append(acked, ack{id, async, n})
						enough := len(acked) == 1500
						mu.Unlock()
						if enough {
							// kill -9 the moment an answer is read, the
							// load still running: a write acknowledged
							// before its commit would be caught queued.
							killed <- p.cmd.Process.Kill()
						}
					}
				})
			}
			select {
			case err := <-killed:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(2 * time.Minute):
				t.Fatal("1,500 executions were not acknowledged in 2 minutes")
			}
			<-p.done
			stop.Store(true)
			wg.Wait()
			t.Logf("%d executions acknowledged before the kill", len(acked))

			p = startRunner(t, bin, cfg, addr)
			missing := 0
			for _, a := range acked {
				code, body := p.do(t, "GET", "/v1/workflows/three/executions/"+a.id, "")
				if code != 200 {
					missing++
					if missing <= 5 {
						t.Errorf("acknowledged execution %s (async %v): %d %v after the restart", a.id, a.async, code, body)
					}
					continue
				}
				if a.async {
					continue // its end may have come after the kill (then interrupted, below)
				}
				out, _ := body["output"].(map[string]any)
				nodes, _ := body["nodes"].([]any)
				if body["status"] != store.StatusCompleted || out["n"] != a.n || len(nodes) != 3 {
					t.Errorf("acknowledged execution %s: %v", a.id, body)
				}
			}
			if missing > 0 {
				t.Fatalf("%d of %d acknowledged executions lost", missing, len(acked))
			}
			// Nothing stays running: the in-flight ones are interrupted
			// (SQLite at start, PostgreSQL once the dead lease ends).
			testenv.Eventually(t, 30*time.Second, func() error {
				_, body := p.do(t, "GET", "/v1/workflows/three/executions", "")
				list, _ := body["executions"].([]any)
				for _, e := range list {
					if e.(map[string]any)["status"] == store.StatusRunning {
						return fmt.Errorf("still running: %v", e)
					}
				}
				return nil
			})
		})
	}
}
