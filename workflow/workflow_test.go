package workflow

import (
	"context"
	"strings"
	"testing"
)

func TestCompileErrorsNameTheNode(t *testing.T) {
	cases := []struct {
		name string
		def  Definition
		want string
	}{
		{"unknown type", Definition{Name: "w", Nodes: []Node{{ID: "a", Type: "teleport"}}}, `node "a": unknown type "teleport"`},
		{"missing node", Definition{Name: "w", Nodes: []Node{{ID: "a", Type: "transform"}}, Connections: []Connection{{From: "a", To: "b"}}}, `node "b" does not exist`},
		{"cycle", Definition{Name: "w", Nodes: []Node{{ID: "a", Type: "transform"}, {ID: "b", Type: "transform"}}, Connections: []Connection{{From: "a", To: "b"}, {From: "b", To: "a"}}}, "cycle through nodes a, b"},
		{"duplicate", Definition{Name: "w", Nodes: []Node{{ID: "a", Type: "transform"}, {ID: "a", Type: "identity"}}}, `node "a": duplicate id`},
		{"no name", Definition{Nodes: []Node{{ID: "a", Type: "transform"}}}, "name: required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(tc.def)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestExampleWorkflowRuns(t *testing.T) {
	wfs, err := LoadDir("../examples/workflows")
	if err != nil {
		t.Fatal(err)
	}
	res, err := wfs["hello"].Execute(context.Background(), map[string]any{"x": 1.0}, Caller{Tenant: "acme", User: "alice", Roles: []string{"admin"}})
	if err != nil {
		t.Fatal(err)
	}
	id, _ := res.Output["identity"].(map[string]any)
	if res.Output["greeting"] != "hello" || res.Output["x"] != 1.0 || id["tenant"] != "acme" || id["user"] != "alice" {
		t.Fatalf("unexpected output %#v", res.Output)
	}
}

func TestEventPipelineExample(t *testing.T) {
	wfs, err := LoadDir("../examples/workflows")
	if err != nil {
		t.Fatal(err)
	}
	res, err := wfs["event-pipeline"].Execute(context.Background(), map[string]any{"items": []any{1.0, 2.0}}, Caller{Tenant: "acme", User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	ev := res.Output["events"].([]any)
	if len(ev) != 2 || ev[1].(map[string]any)["result"].(map[string]any)["doubled"] != 4.0 || res.Output["audit_id"] == nil {
		t.Fatalf("output %v", res.Output)
	}
}
