// Package workflow is the runner: workflow definitions (DAGs of typed nodes),
// their execution, and the HTTP API that Envoy forwards authorized requests to.
package workflow

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Definition is a workflow as written in a file.
type Definition struct {
	Name        string       `yaml:"name" json:"name"`
	Nodes       []Node       `yaml:"nodes" json:"nodes"`
	Connections []Connection `yaml:"connections" json:"connections"`
}

// Node is one step: an id unique in the workflow, a type from the node
// library, and its configuration.
type Node struct {
	ID     string         `yaml:"id" json:"id"`
	Type   string         `yaml:"type" json:"type"`
	Config map[string]any `yaml:"config" json:"config,omitempty"`
}

// Connection feeds one node's output into another's input.
type Connection struct {
	From string `yaml:"from" json:"from"`
	To   string `yaml:"to" json:"to"`
}

// Workflow is a validated definition with its nodes in execution order.
type Workflow struct {
	Def   Definition
	order []string            // topological order
	preds map[string][]string // node -> its inputs
	nodes map[string]Node
}

// Compile validates a definition: known node types, unique ids, connections
// between existing nodes, no cycles. Each error names the node.
func Compile(d Definition) (*Workflow, error) {
	var errs []error
	if d.Name == "" {
		errs = append(errs, errors.New("name: required"))
	}
	if len(d.Nodes) == 0 {
		errs = append(errs, errors.New("nodes: at least one node is required"))
	}
	w := &Workflow{Def: d, preds: map[string][]string{}, nodes: map[string]Node{}}
	for i, n := range d.Nodes {
		switch {
		case n.ID == "":
			errs = append(errs, fmt.Errorf("nodes[%d]: id: required", i))
			continue
		case w.nodes[n.ID].ID != "":
			errs = append(errs, fmt.Errorf("node %q: duplicate id", n.ID))
		}
		if _, ok := library[n.Type]; !ok {
			errs = append(errs, fmt.Errorf("node %q: unknown type %q (known: %s)", n.ID, n.Type, strings.Join(nodeTypes(), ", ")))
		}
		w.nodes[n.ID] = n
	}
	for i, c := range d.Connections {
		for _, end := range []string{c.From, c.To} {
			if _, ok := w.nodes[end]; !ok {
				errs = append(errs, fmt.Errorf("connections[%d]: node %q does not exist", i, end))
			}
		}
		w.preds[c.To] = append(w.preds[c.To], c.From)
	}
	if len(errs) == 0 {
		order, err := topo(d.Nodes, d.Connections)
		if err != nil {
			errs = append(errs, err)
		}
		w.order = order
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("workflow %q: %w", d.Name, err)
	}
	return w, nil
}

// topo orders nodes so every node comes after its inputs (Kahn's algorithm,
// ties broken by declaration order so execution is deterministic).
func topo(nodes []Node, conns []Connection) ([]string, error) {
	indeg := map[string]int{}
	succ := map[string][]string{}
	for _, n := range nodes {
		indeg[n.ID] += 0
	}
	for _, c := range conns {
		indeg[c.To]++
		succ[c.From] = append(succ[c.From], c.To)
	}
	var ready, order []string
	for _, n := range nodes {
		if indeg[n.ID] == 0 {
			ready = append(ready, n.ID)
		}
	}
	for len(ready) > 0 {
		id := ready[0]
		ready = ready[1:]
		order = append(order, id)
		for _, s := range succ[id] {
			if indeg[s]--; indeg[s] == 0 {
				ready = append(ready, s)
			}
		}
	}
	if len(order) != len(nodes) {
		var cyc []string
		for _, n := range nodes {
			if indeg[n.ID] > 0 {
				cyc = append(cyc, n.ID)
			}
		}
		return nil, fmt.Errorf("cycle through nodes %s", strings.Join(cyc, ", "))
	}
	return order, nil
}

// LoadDir compiles every *.yaml, *.yml and *.json file in dir, strictly
// (unknown keys are errors). Errors name the file.
func LoadDir(dir string) (map[string]*Workflow, error) {
	files, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string]*Workflow{}
	var errs []error
	for _, f := range files {
		ext := filepath.Ext(f.Name())
		if f.IsDir() || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		p := filepath.Join(dir, f.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var d Definition
		dec := yaml.NewDecoder(bytes.NewReader(b)) // YAML is a superset of JSON
		dec.KnownFields(true)
		if err := dec.Decode(&d); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s", p, strings.TrimPrefix(err.Error(), "yaml: ")))
			continue
		}
		w, err := Compile(d)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
			continue
		}
		if _, dup := out[d.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: workflow %q is defined twice", p, d.Name))
			continue
		}
		out[d.Name] = w
	}
	return out, errors.Join(errs...)
}

func nodeTypes() []string {
	var ts []string
	for t := range library {
		ts = append(ts, t)
	}
	sort.Strings(ts)
	return ts
}
