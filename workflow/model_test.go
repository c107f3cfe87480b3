package workflow

import (
	"strings"
	"testing"
)

func TestCompileValidation(t *testing.T) {
	n := func(id, typ string) Node { return Node{ID: id, Type: typ} }
	cases := []struct {
		name string
		def  Definition
		want string
	}{
		{"unknown type", Definition{Name: "w", Nodes: []Node{n("a", "teleport")}}, `node "a": unknown type "teleport"`},
		{"missing node", Definition{Name: "w", Nodes: []Node{n("a", "transform")}, Connections: []Connection{{From: "a", To: "b"}}}, `node "b" does not exist`},
		{"missing source", Definition{Name: "w", Nodes: []Node{n("b", "transform")}, Connections: []Connection{{From: "a/result", To: "b/x"}}}, `node "a" does not exist`},
		{"cycle", Definition{Name: "w", Nodes: []Node{n("a", "transform"), n("b", "transform")}, Connections: []Connection{{From: "a", To: "b"}, {From: "b", To: "a"}}}, "cycle through nodes a, b"},
		{"self loop", Definition{Name: "w", Nodes: []Node{n("a", "transform")}, Connections: []Connection{{From: "a", To: "a"}}}, "cycle through nodes a"},
		{"duplicate", Definition{Name: "w", Nodes: []Node{n("a", "transform"), n("a", "identity")}}, `node "a": duplicate id`},
		{"no name", Definition{Nodes: []Node{n("a", "transform")}}, "name: required"},
		{"no nodes", Definition{Name: "w"}, "nodes: at least one node"},
		{"bad id", Definition{Name: "w", Nodes: []Node{n("a/b", "transform")}}, `node "a/b": id must be`},
		{"unconnected required input", Definition{Name: "w",
			Nodes:       []Node{n("src", "transform"), {ID: "each", Type: "batch", Config: map[string]any{"step": map[string]any{"type": "identity"}}}},
			Connections: []Connection{{From: "src/list", To: "each/other"}}}, `node "each": type batch has no input "other"`},
		{"required input not connected", Definition{Name: "w",
			Nodes:       []Node{n("src", "transform"), n("side", "transform"), {ID: "each", Type: "batch", Config: map[string]any{"step": map[string]any{"type": "identity"}}}},
			Connections: []Connection{{From: "src", To: "side"}, {From: "side/x", To: "each/items"}, {From: "src/x", To: "each/items"}}}, `input "items" is fed by connections[1] and connections[2]`},
		{"unknown output", Definition{Name: "w", Nodes: []Node{{ID: "h", Type: "http", Config: map[string]any{"url": "http://x"}}, n("b", "transform")},
			Connections: []Connection{{From: "h/nope", To: "b"}}}, `node "h": type http has no output "nope"`},
		{"bad node config", Definition{Name: "w", Nodes: []Node{{ID: "c", Type: "code", Config: map[string]any{"code": "result = ("}}}}, `node "c" (code): config: code:`},
		{"bad jq", Definition{Name: "w", Nodes: []Node{{ID: "t", Type: "transform", Config: map[string]any{"expr": ".a |"}}}}, `node "t" (transform): config: expr:`},
		{"bad timeout", Definition{Name: "w", Nodes: []Node{{ID: "t", Type: "transform", Timeout: "soon"}}}, `node "t": timeout: "soon"`},
		{"missing output node", Definition{Name: "w", Nodes: []Node{n("a", "transform")}, Output: "z"}, `output: node "z" does not exist`},
		{"batch of batch", Definition{Name: "w", Nodes: []Node{{ID: "b", Type: "batch", Config: map[string]any{"step": map[string]any{"type": "batch"}}}}}, `a batch cannot map another batch`},
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

func TestRequiredInputMustBeConnected(t *testing.T) {
	_, err := Compile(Definition{Name: "w",
		Nodes:       []Node{{ID: "src", Type: "transform"}, {ID: "each", Type: "batch", Config: map[string]any{"step": map[string]any{"type": "identity"}}}},
		Connections: []Connection{{From: "src/x", To: "each/unused"}}})
	if err == nil || !strings.Contains(err.Error(), `node "each": required input "items" is not connected`) {
		t.Fatalf("got %v", err)
	}
}

func TestParseDefinitionJSONAndYAML(t *testing.T) {
	j := `{"name":"j","nodes":[{"id":"a","type":"transform","config":{"set":{"n":1}}},{"id":"b","type":"identity"}],"connections":[{"from":"a","to":"b"}]}`
	y := "name: y\nnodes:\n  - id: a\n    type: transform\n    config: {set: {n: 1}}\n  - id: b\n    type: identity\nconnections:\n  - {from: a, to: b}\n"
	for _, src := range []string{j, y} {
		d, err := ParseDefinition([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		w, err := Compile(d)
		if err != nil {
			t.Fatal(err)
		}
		res, err := w.Execute(t.Context(), nil, Caller{Tenant: "acme", User: "u"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Output["n"] != 1.0 { // YAML ints are normalized to JSON numbers
			t.Fatalf("%s: output %v", d.Name, res.Output)
		}
	}
	if _, err := ParseDefinition([]byte(`{"name":"x","nodes":[],"bogus":1}`)); err == nil {
		t.Fatal("unknown JSON field accepted")
	}
	if _, err := ParseDefinition([]byte("name: x\nbogus: 1\n")); err == nil {
		t.Fatal("unknown YAML field accepted")
	}
}

func TestPortsAndOutputs(t *testing.T) {
	d := Definition{Name: "ports",
		Nodes: []Node{
			{ID: "a", Type: "transform", Config: map[string]any{"set": map[string]any{"x": 1}}},
			{ID: "b", Type: "transform", Config: map[string]any{"set": map[string]any{"y": 2}}},
			{ID: "c", Type: "transform"},
			{ID: "d", Type: "identity"},
		},
		Connections: []Connection{{From: "a/x", To: "c/left"}, {From: "b", To: "c/right"}, {From: "a", To: "d"}},
	}
	w, err := Compile(d)
	if err != nil {
		t.Fatal(err)
	}
	res, err := w.Execute(t.Context(), map[string]any{"in": true}, Caller{Tenant: "acme", User: "u"})
	if err != nil {
		t.Fatal(err)
	}
	c := res.Output["c"].(map[string]any) // two sinks: keyed by node
	if c["left"] != 1.0 || c["right"].(map[string]any)["y"] != 2.0 {
		t.Fatalf("c = %v", c)
	}
	if res.Output["d"].(map[string]any)["identity"] == nil {
		t.Fatalf("d = %v", res.Output["d"])
	}
}
