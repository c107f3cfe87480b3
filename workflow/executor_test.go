package workflow

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
)

var acme = Caller{Tenant: "acme", User: "alice", Roles: []string{"admin"}}

// upstream is a test HTTP server the http node may call; its handler gets
// the request and decides when to answer.
func upstream(t *testing.T, h http.HandlerFunc) (host string) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u.Host
}

func httpNode(id, host, path string) Node {
	return Node{ID: id, Type: "http", Config: map[string]any{"url": "http://" + host + path}}
}

func mustCompile(t *testing.T, d Definition) *Workflow {
	t.Helper()
	w, err := Compile(d)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// Two independent branches must run at the same time: the upstream answers
// neither request until both have arrived, so a sequential executor would
// hit the node timeout instead.
func TestIndependentBranchesRunInParallel(t *testing.T) {
	arrived := make(chan struct{}, 2)
	both := make(chan struct{})
	var n atomic.Int32
	host := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 2 {
			close(both)
		}
		arrived <- struct{}{}
		select {
		case <-both:
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"ok":true}`))
		case <-r.Context().Done():
		}
	})
	w := mustCompile(t, Definition{Name: "par",
		Nodes:       []Node{httpNode("left", host, "/l"), httpNode("right", host, "/r"), {ID: "join", Type: "transform"}},
		Connections: []Connection{{From: "left/body", To: "join/l"}, {From: "right/body", To: "join/r"}},
	})
	x := NewExecutor(ExecutorOptions{HTTPAllow: []string{host}, Limits: config.RunnerLimits{NodeTimeout: 5 * time.Second}})
	res, err := x.Run(t.Context(), w, nil, acme, RunOptions{})
	if err != nil {
		t.Fatalf("parallel branches: %v", err)
	}
	if res.Output["l"].(map[string]any)["ok"] != true || res.Output["r"].(map[string]any)["ok"] != true {
		t.Fatalf("output %v", res.Output)
	}
}

func hang(t *testing.T) string {
	return upstream(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
}

func TestNodeTimeout(t *testing.T) {
	host := hang(t)
	n := httpNode("slow", host, "/")
	n.Timeout = "100ms"
	w := mustCompile(t, Definition{Name: "nt", Nodes: []Node{n}})
	x := NewExecutor(ExecutorOptions{HTTPAllow: []string{host}})
	start := time.Now()
	_, err := x.Run(t.Context(), w, nil, acme, RunOptions{})
	var ne *NodeError
	if !errors.As(err, &ne) || ne.Node != "slow" || !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "node timed out after 100ms") {
		t.Fatalf("got %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("the node timeout did not stop the node")
	}
}

func TestExecutionTimeLimit(t *testing.T) {
	host := hang(t)
	w := mustCompile(t, Definition{Name: "et", Nodes: []Node{httpNode("slow", host, "/")}})
	x := NewExecutor(ExecutorOptions{HTTPAllow: []string{host}, Limits: config.RunnerLimits{MaxExecutionTime: 150 * time.Millisecond}})
	_, err := x.Run(t.Context(), w, nil, acme, RunOptions{})
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "max_execution_time") {
		t.Fatalf("got %v", err)
	}
	// A requested timeout shorter than the limit is honoured and named.
	x = NewExecutor(ExecutorOptions{HTTPAllow: []string{host}})
	_, err = x.Run(t.Context(), w, nil, acme, RunOptions{Timeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "requested timeout") {
		t.Fatalf("got %v", err)
	}
	if x.Running("acme") != 0 {
		t.Fatal("slot not released")
	}
}

func TestCancellationPropagates(t *testing.T) {
	started := make(chan struct{}, 1)
	host := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-r.Context().Done()
	})
	w := mustCompile(t, Definition{Name: "c",
		Nodes:       []Node{httpNode("slow", host, "/"), {ID: "after", Type: "identity"}},
		Connections: []Connection{{From: "slow", To: "after"}}})
	x := NewExecutor(ExecutorOptions{HTTPAllow: []string{host}})
	ctx, cancel := context.WithCancelCause(t.Context())
	var ran atomic.Bool
	errc := make(chan error, 1)
	go func() {
		_, err := x.Run(ctx, w, nil, acme, RunOptions{OnNode: func(_ context.Context, r NodeRun) {
			if r.Node == "after" {
				ran.Store(true)
			}
		}})
		errc <- err
	}()
	<-started
	cancel(ErrCancelled)
	select {
	case err := <-errc:
		if !errors.Is(err, ErrCancelled) {
			t.Fatalf("got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancel did not stop the execution")
	}
	if ran.Load() {
		t.Fatal("a node downstream of a cancelled one ran")
	}
}

func TestFailureCancelsSiblings(t *testing.T) {
	host := hang(t)
	w := mustCompile(t, Definition{Name: "f", Nodes: []Node{
		httpNode("slow", host, "/"),
		{ID: "boom", Type: "code", Config: map[string]any{"code": "fail('boom')"}},
	}})
	x := NewExecutor(ExecutorOptions{HTTPAllow: []string{host}})
	start := time.Now()
	_, err := x.Run(t.Context(), w, nil, acme, RunOptions{})
	var ne *NodeError
	if !errors.As(err, &ne) || ne.Node != "boom" {
		t.Fatalf("got %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("a failure did not cancel the running sibling")
	}
}

func TestLimits(t *testing.T) {
	three := mustCompile(t, Definition{Name: "three", Nodes: []Node{{ID: "a", Type: "transform"}, {ID: "b", Type: "identity"}, {ID: "c", Type: "code", Config: map[string]any{"code": "result = 1"}}}})
	t.Run("max_nodes", func(t *testing.T) {
		x := NewExecutor(ExecutorOptions{TenantLimits: map[string]config.RunnerLimits{"acme": {MaxNodes: 2}}})
		_, err := x.Run(t.Context(), three, nil, acme, RunOptions{})
		var le *LimitError
		if !errors.As(err, &le) || le.Limit != "max_nodes" || !strings.Contains(err.Error(), "3 nodes, more than the 2 allowed") {
			t.Fatalf("got %v", err)
		}
		// Another tenant keeps the defaults.
		if _, err := x.Run(t.Context(), three, nil, Caller{Tenant: "globex", User: "bob"}, RunOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("allowed_node_types", func(t *testing.T) {
		x := NewExecutor(ExecutorOptions{Limits: config.RunnerLimits{AllowedNodeTypes: []string{"transform", "identity"}}})
		_, err := x.Run(t.Context(), three, nil, acme, RunOptions{})
		var le *LimitError
		if !errors.As(err, &le) || le.Limit != "allowed_node_types" || !strings.Contains(err.Error(), `node "c": type "code" is not allowed`) {
			t.Fatalf("got %v", err)
		}
		batch := mustCompile(t, Definition{Name: "b", Nodes: []Node{{ID: "b", Type: "batch", Config: map[string]any{"step": map[string]any{"type": "code", "config": map[string]any{"code": "result=1"}}}}}})
		x = NewExecutor(ExecutorOptions{Limits: config.RunnerLimits{AllowedNodeTypes: []string{"batch"}}})
		if err := x.Admit(batch, "acme"); err == nil || !strings.Contains(err.Error(), `type "code" is not allowed`) {
			t.Fatalf("a batch sub-step escaped allowed_node_types: %v", err)
		}
	})
	t.Run("max_concurrent_executions", func(t *testing.T) {
		x := NewExecutor(ExecutorOptions{Limits: config.RunnerLimits{MaxConcurrentExecutions: 2}})
		r1, err := x.Reserve(three, acme)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := x.Reserve(three, acme)
		if err != nil {
			t.Fatal(err)
		}
		_, err = x.Reserve(three, acme)
		var le *LimitError
		if !errors.As(err, &le) || le.Limit != "max_concurrent_executions" {
			t.Fatalf("third execution: got %v", err)
		}
		if _, err := x.Reserve(three, Caller{Tenant: "globex", User: "b"}); err != nil {
			t.Fatalf("another tenant is not limited by acme's executions: %v", err)
		}
		if _, err := r1.Run(t.Context(), nil, RunOptions{}); err != nil {
			t.Fatal(err)
		}
		r2.Release()
		r2.Release() // idempotent
		if n := x.Running("acme"); n != 0 {
			t.Fatalf("running = %d after release", n)
		}
	})
	t.Run("max_execution_time", func(t *testing.T) {
		loop := mustCompile(t, Definition{Name: "loop", Nodes: []Node{{ID: "spin", Type: "code", Config: map[string]any{"code": "x = 0\nwhile True:\n  x = x + 1\n"}}}})
		x := NewExecutor(ExecutorOptions{Limits: config.RunnerLimits{MaxExecutionTime: 100 * time.Millisecond, CodeMaxSteps: 1 << 62, CodeMaxMemory: 1 << 40}})
		_, err := x.Run(t.Context(), loop, nil, acme, RunOptions{})
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("batch_max_items", func(t *testing.T) {
		b := mustCompile(t, Definition{Name: "b", Nodes: []Node{{ID: "each", Type: "batch", Config: map[string]any{"step": map[string]any{"type": "identity"}}}}})
		x := NewExecutor(ExecutorOptions{Limits: config.RunnerLimits{BatchMaxItems: 2}})
		_, err := x.Run(t.Context(), b, map[string]any{"items": []any{1.0, 2.0, 3.0}}, acme, RunOptions{})
		var le *LimitError
		if !errors.As(err, &le) || le.Limit != "batch_max_items" {
			t.Fatalf("got %v", err)
		}
	})
}
