package workflow

import (
	"strings"
	"testing"
)

// ResumeBlocker: which nodes left to run may run again after a runner
// died, completed nodes never counting; resume: never opts out.
func TestResumeBlocker(t *testing.T) {
	httpN := func(id, method string) Node {
		return Node{ID: id, Type: "http", Config: map[string]any{"url": "http://up.test/x", "method": method}}
	}
	get := Node{ID: "get", Type: "http", Config: map[string]any{"url": "http://up.test/x"}} // GET by default
	read := Node{ID: "read", Type: "sql", Config: map[string]any{"query": "SELECT 1"}}
	write := Node{ID: "write", Type: "sql", Config: map[string]any{"query": "INSERT INTO t VALUES (1)", "read_only": false}}
	batch := func(step map[string]any) Node {
		return Node{ID: "each", Type: "batch", Config: map[string]any{"step": step}}
	}
	pure := []Node{{ID: "i", Type: "identity"}, {ID: "t", Type: "transform", Config: map[string]any{"set": map[string]any{"a": 1}}},
		{ID: "c", Type: "code", Config: map[string]any{"code": "result = 1"}}}
	for _, c := range []struct {
		name      string
		resume    string
		nodes     []Node
		completed []string
		want      string // "" resumable, else a part of the reason
	}{
		{"pure nodes", "", pure, nil, ""},
		{"idempotent http and read-only sql", "auto", []Node{get, httpN("put", "PUT"), httpN("del", "DELETE"), httpN("head", "HEAD"), read}, nil, ""},
		{"POST still to run", "", []Node{get, httpN("post", "POST")}, []string{"get"}, `node "post" (http) had not completed and is not safe to run again: method POST is not idempotent`},
		{"PATCH still to run", "", []Node{httpN("patch", "PATCH")}, nil, "method PATCH is not idempotent"},
		{"a POST that completed does not run again", "", []Node{httpN("post", "POST"), get}, []string{"post"}, ""},
		{"writing sql", "", []Node{write}, nil, `node "write" (sql) had not completed and is not safe to run again: a writing statement`},
		{"batch of a safe step", "", []Node{batch(map[string]any{"type": "identity"})}, nil, ""},
		{"batch of a POST", "", []Node{batch(map[string]any{"type": "http", "config": map[string]any{"url": "http://up.test/x", "method": "POST"}})}, nil, "its step: method POST is not idempotent"},
		{"audit_log", "", []Node{{ID: "a", Type: "audit_log", Config: map[string]any{"action": "x"}}}, nil, "would record the action again"},
		{"resume: never", "never", pure, nil, `opts out of resuming (resume: never)`},
		{"resume: never, all completed", "never", pure, []string{"i", "t", "c"}, "resume: never"},
	} {
		t.Run(c.name, func(t *testing.T) {
			w, err := Compile(Definition{Name: "w", Resume: c.resume, Nodes: c.nodes})
			if err != nil {
				t.Fatal(err)
			}
			done := map[string]bool{}
			for _, id := range c.completed {
				done[id] = true
			}
			got := w.ResumeBlocker(done)
			if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
				t.Fatalf("ResumeBlocker = %q, want %q", got, c.want)
			}
		})
	}
	if _, err := Compile(Definition{Name: "w", Resume: "sometimes", Nodes: pure}); err == nil || !strings.Contains(err.Error(), "resume:") {
		t.Fatalf("resume: sometimes compiled: %v", err)
	}
}
