package workflow

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/kailash-gw/kailash/internal/testenv"
)

// A node's log lines (permission_check logs the resource it checked) lose
// the execution's sensitive values when the executor logs through
// RedactingHandler.
func TestRedactingHandlerTakesSensitiveValuesOutOfNodeLogs(t *testing.T) {
	d := Definition{Name: "w", Sensitive: []string{"doc"}, Nodes: []Node{{ID: "p", Type: "permission_check",
		Config: map[string]any{"permission": "data:read", "resource_from": "doc.id", "on_deny": "continue"}}}}
	wf, err := Compile(d)
	if err != nil {
		t.Fatal(err)
	}
	secret := "doc-" + rand.Text()
	for _, wrap := range []bool{false, true} {
		var buf testenv.LogBuffer
		h := slog.Handler(slog.NewJSONHandler(&buf, nil))
		if wrap {
			h = RedactingHandler(h)
		}
		x := NewExecutor(ExecutorOptions{Logger: slog.New(h), Policy: policyFunc(func(context.Context, ast.Value) (any, error) { return true, nil })})
		if _, err := x.Run(t.Context(), wf, map[string]any{"doc": map[string]any{"id": secret}}, acme, RunOptions{ID: "e1"}); err != nil {
			t.Fatal(err)
		}
		leaked := strings.Contains(buf.String(), secret)
		if wrap && (leaked || !strings.Contains(buf.String(), Redacted)) {
			t.Fatalf("through RedactingHandler: %s", buf.String())
		}
		if !wrap && !leaked {
			t.Fatalf("the test does not exercise a leak: %s", buf.String())
		}
	}
}

func TestRedact(t *testing.T) {
	var nd needles
	nd.add(map[string]any{"a": "hunter2 secret", "b": []any{42.0, "x y/z"}, "c": true})
	nd = sortNeedles(nd)
	for in, want := range map[string]string{
		`failed: "hunter2 secret"`:          `failed: "[redacted]"`,
		"GET /q?v=x+y%2Fz":                  "GET /q?v=[redacted]",
		"line 42: boom":                     redactedWhole, // too short to cut out
		"nothing here":                      "nothing here",
		`json {"a":"hunter2 secret","n":1}`: `json {"a":"[redacted]","n":1}`,
	} {
		if got := nd.redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
	if _, err := Compile(Definition{Name: "w", Sensitive: []string{""}, Nodes: []Node{{ID: "a", Type: "identity"}}}); err == nil {
		t.Fatal("an empty sensitive field compiled")
	}
	// A redacted error still matches what it wraps.
	e := &redactedError{msg: "x", err: ErrTimeout}
	if !errors.Is(e, ErrTimeout) {
		t.Fatal("errors.Is lost")
	}
}
