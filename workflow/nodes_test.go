package workflow

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
)

func runOne(t *testing.T, x *Executor, n Node, input map[string]any) (map[string]any, error) {
	t.Helper()
	w, err := Compile(Definition{Name: "one", Nodes: []Node{n}})
	if err != nil {
		return nil, err
	}
	res, err := x.Run(t.Context(), w, input, acme, RunOptions{ID: "exec-1"})
	if err != nil {
		return nil, err
	}
	return res.Output, nil
}

func code(src string) Node {
	return Node{ID: "script", Type: "code", Config: map[string]any{"code": src}}
}

func TestCodeSeedStyle(t *testing.T) {
	x := NewExecutor(ExecutorOptions{})
	out, err := runOne(t, x, code("result = parameters.get('data', {})"), map[string]any{"data": map[string]any{"a": 1.0}})
	if err != nil {
		t.Fatal(err)
	}
	if out["result"].(map[string]any)["a"] != 1.0 {
		t.Fatalf("out %v", out)
	}
	out, err = runOne(t, x, code(`
def double(xs):
    return [x * 2 for x in xs]
total = 0
for v in double(parameters["xs"]):
    total += v
result = {"valid": True, "total": total, "who": caller["user"], "msg": "%s:%d" % ("n", len(parameters["xs"])), "s": ",".join(["a", "b"])}
`), map[string]any{"xs": []any{1.0, 2.0, 3.0}})
	if err != nil {
		t.Fatal(err)
	}
	r := out["result"].(map[string]any)
	if r["total"] != 12.0 || r["who"] != "alice" || r["msg"] != "n:3" || r["s"] != "a,b" {
		t.Fatalf("result %v", r)
	}
}

// Sandbox escapes: every one must fail with a clear error, quickly, and
// leave the runner healthy.
func TestCodeSandbox(t *testing.T) {
	x := NewExecutor(ExecutorOptions{Limits: config.RunnerLimits{CodeMaxSteps: 200_000, CodeMaxMemory: 8 << 20}})
	cases := []struct{ name, src, want string }{
		{"load", `load("os.star", "system")` + "\nresult = 1", "load is not allowed"},
		{"open a file", `result = open("/etc/passwd").read()`, "undefined: open"},
		{"import", "import os\nresult = 1", "got import"},
		{"network", `result = http.get("http://example.com")`, "undefined: http"},
		{"infinite loop", "while True:\n  pass\nresult = 1", "step limit exceeded"},
		{"recursion", "def f(n):\n  return f(n+1)\nresult = f(0)", "called recursively"},
		{"string repeat", `result = "x" * (1 << 30)`, "memory limit exceeded"},
		{"list repeat", `result = [0] * 1000000000`, "memory limit exceeded"},
		{"materialized range", `result = list(range(1000000000))`, "exceeds code_max_memory"},
		{"doubling", "s = 'x'\nfor i in range(64):\n  s = s + s\nresult = len(s)", "memory limit exceeded"},
		{"doubling augmented", "s = ['x']\nfor i in range(64):\n  s += s\nresult = len(s)", "memory limit exceeded"},
		{"append loop", "l = []\nfor i in range(100000):\n  l.append('y' * 1000)\nresult = len(l)", "memory limit exceeded"},
		{"join amplification", "s = 'x' * 100000\nresult = len(','.join([s] * 1000))", "memory limit exceeded"},
		{"replace amplification", "s = 'x' * 100000\nresult = len(s.replace('', s))", "memory limit exceeded"},
		{"str of shared list", "s = 'x' * 100000\nl = [s] * 1000\nresult = len(str(l))", "memory limit exceeded"},
		{"big int", "n = 3\nfor i in range(40):\n  n = n * n\nresult = 1", "integer too large"},
		{"no result", "x = 1", "did not set result"},
		{"function result", "def f():\n  pass\nresult = f", "cannot leave the script"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := runOne(t, x, code(tc.src), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("took %s", d)
			}
		})
	}
}

func TestTransformJQ(t *testing.T) {
	x := NewExecutor(ExecutorOptions{})
	out, err := runOne(t, x, Node{ID: "t", Type: "transform", Config: map[string]any{"expr": `{total: ([.items[].price] | add), by: $caller.user, exec: $execution}`}},
		map[string]any{"items": []any{map[string]any{"price": 2.0}, map[string]any{"price": 3.5}}})
	if err != nil {
		t.Fatal(err)
	}
	if out["total"] != 5.5 || out["by"] != "alice" || out["exec"] != "exec-1" {
		t.Fatalf("out %v", out)
	}
	out, err = runOne(t, x, Node{ID: "t", Type: "transform", Config: map[string]any{"expr": `$ENV | length`}}, nil)
	if err != nil || out["result"] != 0 {
		t.Fatalf("jq sees the runner's environment: %v %v", out, err)
	}
	if _, err := runOne(t, x, Node{ID: "t", Type: "transform", Config: map[string]any{"expr": `error("bad")`}}, nil); err == nil || !strings.Contains(err.Error(), "bad") {
		t.Fatalf("got %v", err)
	}
}

func TestHTTPNodeAllowlist(t *testing.T) {
	host := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "http://127.0.0.2:1/", http.StatusFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"q":"` + r.URL.Query().Get("q") + `"}`))
	})
	n := httpNode("h", host, "/x")
	if _, err := runOne(t, NewExecutor(ExecutorOptions{}), n, nil); err == nil || !strings.Contains(err.Error(), "not in runner.http_allow") {
		t.Fatalf("no allowlist: got %v", err)
	}
	x := NewExecutor(ExecutorOptions{HTTPAllow: []string{host}})
	out, err := runOne(t, x, n, map[string]any{"query": map[string]any{"q": "hi"}})
	if err != nil {
		t.Fatal(err)
	}
	if out["status"] != 200.0 || out["body"].(map[string]any)["q"] != "hi" {
		t.Fatalf("out %v", out)
	}
	if _, err := runOne(t, x, httpNode("h", host, "/redirect"), nil); err == nil || !strings.Contains(err.Error(), "redirect") {
		t.Fatalf("redirect off the allowlist: got %v", err)
	}
	if _, err := Compile(Definition{Name: "w", Nodes: []Node{{ID: "h", Type: "http", Config: map[string]any{"url": "file:///etc/passwd"}}}}); err == nil {
		t.Fatal("file URL accepted")
	}
}

func TestBatchAuditLineage(t *testing.T) {
	var mu sync.Mutex
	var audits []AuditRecord
	x := NewExecutor(ExecutorOptions{Audit: func(_ context.Context, r AuditRecord) error {
		mu.Lock()
		defer mu.Unlock()
		audits = append(audits, r)
		return nil
	}})
	w := mustCompile(t, Definition{Name: "events",
		Nodes: []Node{
			{ID: "batch_events", Type: "batch", Config: map[string]any{"concurrency": 2.0, "step": map[string]any{"type": "code", "config": map[string]any{"code": "result = parameters['item'] * 10"}}}},
			{ID: "track_lineage", Type: "lineage", Config: map[string]any{"source": "agent_request", "target": "workflow_execution"}},
			{ID: "log_events", Type: "audit_log", Config: map[string]any{"action": "events.processed", "fields": []any{"events"}}},
		},
		Connections: []Connection{{From: "batch_events/results", To: "track_lineage/data"}, {From: "track_lineage/data", To: "log_events/events"}},
	})
	res, err := x.Run(t.Context(), w, map[string]any{"items": []any{1.0, 2.0, 3.0}}, acme, RunOptions{ID: "e1"})
	if err != nil {
		t.Fatal(err)
	}
	b := res.Nodes["batch_events"]["results"].([]any)
	if len(b) != 3 || b[2].(map[string]any)["result"] != 30.0 {
		t.Fatalf("batch %v", b)
	}
	lin := res.Nodes["track_lineage"]["lineage"].(map[string]any)
	if lin["source"] != "agent_request" || len(lin["upstream"].([]any)) != 1 {
		t.Fatalf("lineage %v", lin)
	}
	if len(audits) != 1 || audits[0].Action != "events.processed" || audits[0].Execution != "e1" || res.Output["audit_id"] != audits[0].ID {
		t.Fatalf("audits %v output %v", audits, res.Output)
	}
	// A failing audit sink fails the step: no audit, no step.
	x = NewExecutor(ExecutorOptions{Audit: func(context.Context, AuditRecord) error { return errors.New("disk full") }})
	if _, err := runOne(t, x, Node{ID: "a", Type: "audit_log"}, nil); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("got %v", err)
	}
}
