package api

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/workflow/store"
)

// Two runner processes on one PostgreSQL; the one running two executions
// is killed with SIGKILL while both wait in their middle node. The other
// takes both over once the lease ends: the one whose remaining nodes are
// safe to re-run (http GETs) completes there from its next node — the node
// that completed before the kill did not run again (the counting upstream
// saw /a once), the one in flight ran again, the last ran once — and the one
// whose in-flight node is a POST is marked interrupted, the reason naming
// the node and why; one of a workflow with resume: never, whose node is
// safe, is marked interrupted too, the reason saying it opted out.
func TestTakeoverResumesFromLastNode(t *testing.T) {
	testenv.SkipShort(t, "builds and runs the binary")
	bin, err := buildKailash()
	if err != nil {
		t.Fatal(err)
	}
	pg := testenv.StartPostgres(t)
	var mu sync.Mutex
	hits := map[string]int{}
	arrived := make(chan string, 16)
	release := make(chan struct{})
	host := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		hits[r.Method+" "+r.URL.Path]++
		mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/slow") {
			arrived <- r.URL.Path
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q}`, r.URL.Path)
	})
	count := func(k string) int {
		mu.Lock()
		defer mu.Unlock()
		return hits[k]
	}
	runner := func() (string, string) {
		dir := t.TempDir()
		addr := testenv.FreeAddr(t)
		cfg := filepath.Join(dir, "kailash.yaml")
		yaml := "envoy:\n  listen: 127.0.0.1:1\nxds:\n  grpc: 127.0.0.1:2\nauthz:\n  grpc: 127.0.0.1:3\n" +
			"runner:\n  http: " + addr + "\n  postgres_dsn: " + pg.DSN + "\n  lease_ttl: 2s\n  http_allow: [" + host + "]\n" +
			"  limits:\n    max_execution_time: 5m\n    node_timeout: 5m\n" +
			"tenants:\n  - id: acme\n    domains: [acme.localhost]\n    jwt:\n      issuer: https://issuer.test\n      audiences: [kailash]\n      jwks_url: https://issuer.test/jwks.json\n"
		if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return cfg, addr
	}
	cfgA, addrA := runner()
	cfgB, addrB := runner()
	a := startRunner(t, bin, cfgA, addrA)
	b := startRunner(t, bin, cfgB, addrB)

	safe := `{"name":"safe","nodes":[{"id":"a","type":"http","config":{"url":"http://` + host + `/a"}},` +
		`{"id":"slow","type":"http","config":{"url":"http://` + host + `/slow"}},` +
		`{"id":"b","type":"http","config":{"url":"http://` + host + `/b"}}],` +
		`"connections":[{"from":"a","to":"slow"},{"from":"slow","to":"b"}]}`
	unsafe := `{"name":"unsafe","nodes":[{"id":"first","type":"identity"},` +
		`{"id":"post","type":"http","config":{"url":"http://` + host + `/slow-post","method":"POST"}}],` +
		`"connections":[{"from":"first","to":"post"}]}`
	// Safe to re-run, but opted out.
	never := `{"name":"never","resume":"never","nodes":[{"id":"wait","type":"http","config":{"url":"http://` + host + `/slow-never"}}]}`
	for _, def := range []string{safe, unsafe, never} {
		if code, body := a.do(t, "POST", "/v1/workflows", def); code != 201 {
			t.Fatalf("create: %d %v", code, body)
		}
	}
	start := func(name string) string {
		code, body := a.do(t, "POST", "/v1/workflows/"+name+"/executions?async=true", `{}`)
		if code != 202 {
			t.Fatalf("start %s: %d %v", name, code, body)
		}
		return body["execution_id"].(string)
	}
	safeID, unsafeID, neverID := start("safe"), start("unsafe"), start("never")
	for range 3 {
		select {
		case <-arrived: // both wait in their middle node
		case <-time.After(20 * time.Second):
			t.Fatal("the executions never reached their slow nodes")
		}
	}
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-a.done
	close(release) // from now on the slow nodes answer

	var body map[string]any
	testenv.Eventually(t, 30*time.Second, func() error {
		var code int
		code, body = b.do(t, "GET", "/v1/workflows/safe/executions/"+safeID, "")
		if code != 200 || body["status"] != store.StatusCompleted {
			return fmt.Errorf("the resumable execution on the surviving runner: %d %v", code, body)
		}
		return nil
	})
	if body["workflow_version"] != float64(1) {
		t.Errorf("workflow_version %v, want 1", body["workflow_version"])
	}
	if out, _ := body["output"].(map[string]any); fmt.Sprint(out["body"]) != "map[path:/b]" {
		t.Errorf("output %v, want the last node's", body["output"])
	}
	nodes, _ := body["nodes"].([]any)
	var done []string
	for _, n := range nodes {
		m := n.(map[string]any)
		if m["status"] == "completed" {
			done = append(done, m["node"].(string))
		}
	}
	if strings.Join(done, ",") != "a,slow,b" {
		t.Errorf("completed nodes %v, want a,slow,b: %v", done, body["nodes"])
	}
	if n := count("GET /a"); n != 1 {
		t.Errorf("the node that completed before the kill ran %d times, want once", n)
	}
	if n := count("GET /slow"); n != 2 {
		t.Errorf("the node in flight at the kill ran %d times, want twice (again on the survivor)", n)
	}
	if n := count("GET /b"); n != 1 {
		t.Errorf("the last node ran %d times, want once", n)
	}

	testenv.Eventually(t, 30*time.Second, func() error {
		code, body := b.do(t, "GET", "/v1/workflows/unsafe/executions/"+unsafeID, "")
		if code != 200 || body["status"] != store.StatusInterrupted {
			return fmt.Errorf("the non-resumable execution: %d %v", code, body)
		}
		msg := fmt.Sprint(body["error"])
		if !strings.Contains(msg, "stopped renewing its lease") ||
			!strings.Contains(msg, `node "post" (http) had not completed and is not safe to run again: method POST is not idempotent`) {
			return fmt.Errorf("the reason does not name the node and why: %s", msg)
		}
		return nil
	})
	testenv.Eventually(t, 30*time.Second, func() error {
		code, body := b.do(t, "GET", "/v1/workflows/never/executions/"+neverID, "")
		if code != 200 || body["status"] != store.StatusInterrupted {
			return fmt.Errorf("the opted-out execution: %d %v", code, body)
		}
		if msg := fmt.Sprint(body["error"]); !strings.Contains(msg, `workflow "never" opts out of resuming (resume: never)`) {
			return fmt.Errorf("the reason does not say it opted out: %s", msg)
		}
		return nil
	})
	if n := count("GET /slow-never"); n != 1 {
		t.Errorf("the opted-out node ran %d times, want once", n)
	}
	if n := count("POST /slow-post"); n != 1 {
		t.Errorf("the POST ran %d times, want once (never again)", n)
	}
	resp, err := http.Get("http://" + addrB + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"kailash_runner_executions_resumed_total 1", "kailash_runner_executions_taken_over_total 2"} {
		if !strings.Contains(string(m), want+"\n") {
			t.Errorf("the survivor's /metrics lacks %q", want)
		}
	}
}
