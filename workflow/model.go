// Package workflow is the runner: workflow definitions (DAGs of typed nodes),
// their execution, and the HTTP API that Envoy forwards authorized requests to.
package workflow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kailash-gw/kailash/internal/strictjson"
)

// Definition is a workflow as written in a file or sent to the API.
type Definition struct {
	Name        string       `yaml:"name" json:"name"`
	Description string       `yaml:"description,omitempty" json:"description,omitempty"`
	Nodes       []Node       `yaml:"nodes" json:"nodes"`
	Connections []Connection `yaml:"connections,omitempty" json:"connections,omitempty"`
	// Output names the node whose output is the execution's output. Empty:
	// the only sink node's output, or with several sinks an object of their
	// outputs keyed by node id.
	Output string `yaml:"output,omitempty" json:"output,omitempty"`
	// Events describes who may watch this workflow's execution events.
	Events EventPolicy `yaml:"events,omitempty" json:"events,omitzero"`
	// Sensitive names the execution input fields whose values are
	// sensitive ("*": the whole input): they never reach logs or event
	// payloads (sensitive.go). Stored, they are encrypted with the rest of
	// the execution (runner.encryption).
	Sensitive []string `yaml:"sensitive,omitempty" json:"sensitive,omitempty"`
	// SLA is the execution time this workflow promises (a Go duration,
	// e.g. "2s"): executions are measured against it
	// (kailash_runner_sla_compliance_ratio, kailash_runner_sla_breaches_total);
	// it limits nothing.
	SLA string `yaml:"sla,omitempty" json:"sla,omitempty"`
	// Resume says what a runner does with an execution of this workflow
	// it takes over from a dead runner (resume.go): "auto" (the default)
	// resumes it from its last completed node when every node left to run
	// is safe to run again, "never" always marks it interrupted.
	Resume string `yaml:"resume,omitempty" json:"resume,omitempty"`
}

// EventPolicy is the seed's event metadata: a permission a subscriber must
// hold and a data classification it must be cleared for.
type EventPolicy struct {
	RequiredPermission string `yaml:"required_permission,omitempty" json:"required_permission,omitempty"`
	Classification     string `yaml:"classification,omitempty" json:"classification,omitempty"`
}

// Node is one step: an id unique in the workflow, a type from the node
// library, and its configuration.
type Node struct {
	ID     string         `yaml:"id" json:"id"`
	Type   string         `yaml:"type" json:"type"`
	Config map[string]any `yaml:"config,omitempty" json:"config,omitempty"`
	// Timeout bounds this node (a Go duration, e.g. "2s"); it never exceeds
	// the tenant's node_timeout.
	Timeout string `yaml:"timeout,omitempty" json:"timeout,omitempty"`
	// Sensitive names this node's output fields whose values are
	// sensitive ("*": the whole output), as Definition.Sensitive.
	Sensitive []string `yaml:"sensitive,omitempty" json:"sensitive,omitempty"`
}

// Connection feeds one node's output into another's input, as the seed's
// add_connection(from_node, from_output, to_node, to_input). Each end is
// "node" or "node/port". Without an output port the whole output is sent;
// without an input port it is merged into the target's input (and must be an
// object).
type Connection struct {
	From string `yaml:"from" json:"from"`
	To   string `yaml:"to" json:"to"`
}

// Workflow is a validated, compiled definition. It is immutable and safe to
// execute concurrently.
type Workflow struct {
	Def    Definition
	nodes  []*cnode
	index  map[string]int
	order  []int // topological order
	output []int // nodes whose output forms the execution output
	// sensitive is set when the definition marks fields sensitive.
	sensitive *sensitivity
	sla       time.Duration // 0: none declared
}

// SLA is the execution time the workflow declares (0: none).
func (w *Workflow) SLA() time.Duration { return w.sla }

// cnode is a compiled node.
type cnode struct {
	id      string
	typ     string
	spec    *nodeSpec
	cfg     map[string]any
	prep    any // what spec.prepare made of cfg (a compiled script, a jq query)
	timeout time.Duration
	in      []edge
}

type edge struct {
	from     int
	out, in  string // ports; "" = whole output / merge
	fromName string
}

var nodeIDRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]{0,63}$`)

// Compile validates a definition and prepares it for execution: node ids,
// known node types and their config, connections between existing nodes and
// ports, required inputs connected, no cycles. Every problem is reported,
// each naming its node.
func Compile(d Definition) (*Workflow, error) {
	var errs []error
	if d.Name == "" {
		errs = append(errs, errors.New("name: required"))
	} else if !nodeIDRe.MatchString(d.Name) {
		errs = append(errs, fmt.Errorf("name: %q must be letters, digits, '_' and '-' (at most 64)", d.Name))
	}
	if len(d.Nodes) == 0 {
		errs = append(errs, errors.New("nodes: at least one node is required"))
	}
	w := &Workflow{Def: d, index: map[string]int{}}
	if d.SLA != "" {
		var err error
		if w.sla, err = time.ParseDuration(d.SLA); err != nil || w.sla <= 0 {
			errs = append(errs, fmt.Errorf("sla: %q is not a positive duration such as 2s", d.SLA))
		}
	}
	switch d.Resume {
	case "", ResumeAuto, ResumeNever:
	default:
		errs = append(errs, fmt.Errorf("resume: %q must be %s or %s", d.Resume, ResumeAuto, ResumeNever))
	}
	for i, n := range d.Nodes {
		switch {
		case n.ID == "":
			errs = append(errs, fmt.Errorf("nodes[%d]: id: required", i))
			continue
		case !nodeIDRe.MatchString(n.ID):
			errs = append(errs, fmt.Errorf("node %q: id must be letters, digits, '_' and '-' (at most 64)", n.ID))
			continue
		}
		if _, dup := w.index[n.ID]; dup {
			errs = append(errs, fmt.Errorf("node %q: duplicate id", n.ID))
			continue
		}
		cfg, err := normalize(n.Config)
		if err != nil {
			errs = append(errs, fmt.Errorf("node %q: config: %w", n.ID, err))
		}
		cn := &cnode{id: n.ID, typ: n.Type, cfg: cfg}
		if n.Timeout != "" {
			if cn.timeout, err = time.ParseDuration(n.Timeout); err != nil || cn.timeout <= 0 {
				errs = append(errs, fmt.Errorf("node %q: timeout: %q is not a positive duration", n.ID, n.Timeout))
			}
		}
		spec, ok := library[n.Type]
		if !ok {
			errs = append(errs, fmt.Errorf("node %q: unknown type %q (known: %s)", n.ID, n.Type, strings.Join(NodeTypes(), ", ")))
		} else {
			cn.spec = spec
			if spec.prepare != nil {
				if cn.prep, err = spec.prepare(cfg); err != nil {
					errs = append(errs, fmt.Errorf("node %q (%s): config: %w", n.ID, n.Type, err))
				}
			}
		}
		w.index[n.ID] = len(w.nodes)
		w.nodes = append(w.nodes, cn)
	}
	fed := map[[2]string]int{} // (node, input) -> connection index
	for i, c := range d.Connections {
		fromID, out, _ := strings.Cut(c.From, "/")
		toID, in, _ := strings.Cut(c.To, "/")
		ok := true
		for _, end := range []string{fromID, toID} {
			if _, exists := w.index[end]; !exists {
				errs = append(errs, fmt.Errorf("connections[%d] (%s -> %s): node %q does not exist", i, c.From, c.To, end))
				ok = false
			}
		}
		if !ok {
			continue
		}
		src, dst := w.nodes[w.index[fromID]], w.nodes[w.index[toID]]
		if src.spec != nil && out != "" && src.spec.outputs != nil && !slices.Contains(src.spec.outputs, out) {
			errs = append(errs, fmt.Errorf("node %q: type %s has no output %q (outputs: %s)", fromID, src.typ, out, strings.Join(src.spec.outputs, ", ")))
		}
		if in != "" {
			if dst.spec != nil && !dst.spec.openInputs && dst.spec.input(in) == nil {
				errs = append(errs, fmt.Errorf("node %q: type %s has no input %q", toID, dst.typ, in))
			}
			if prev, dup := fed[[2]string{toID, in}]; dup {
				errs = append(errs, fmt.Errorf("node %q: input %q is fed by connections[%d] and connections[%d]", toID, in, prev, i))
			}
			fed[[2]string{toID, in}] = i
		}
		dst.in = append(dst.in, edge{from: w.index[fromID], out: out, in: in, fromName: fromID})
	}
	// A required input must be fed by a named connection, a merge (checked
	// again at run time) or, for a root node, the execution input.
	for _, n := range w.nodes {
		if n.spec == nil || len(n.in) == 0 {
			continue
		}
		merges := slices.ContainsFunc(n.in, func(e edge) bool { return e.in == "" })
		for _, is := range n.spec.inputs {
			if is.required && !merges {
				if _, ok := fed[[2]string{n.id, is.name}]; !ok {
					errs = append(errs, fmt.Errorf("node %q: required input %q is not connected", n.id, is.name))
				}
			}
		}
	}
	if d.Output != "" {
		if i, ok := w.index[d.Output]; ok {
			w.output = []int{i}
		} else {
			errs = append(errs, fmt.Errorf("output: node %q does not exist", d.Output))
		}
	}
	if len(errs) == 0 {
		order, err := w.topo()
		if err != nil {
			errs = append(errs, err)
		}
		w.order = order
		if w.output == nil {
			w.output = w.sinks()
		}
	}
	errs = append(errs, checkSensitive(d)...)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("workflow %q: %w", d.Name, err)
	}
	w.markSensitive()
	return w, nil
}

// topo orders nodes so every node comes after its inputs (Kahn's algorithm,
// ties broken by declaration order so execution is deterministic).
func (w *Workflow) topo() ([]int, error) {
	indeg := make([]int, len(w.nodes))
	succ := make([][]int, len(w.nodes))
	for i, n := range w.nodes {
		for _, e := range n.in {
			indeg[i]++
			succ[e.from] = append(succ[e.from], i)
		}
	}
	var ready, order []int
	for i := range w.nodes {
		if indeg[i] == 0 {
			ready = append(ready, i)
		}
	}
	for len(ready) > 0 {
		i := ready[0]
		ready = ready[1:]
		order = append(order, i)
		for _, s := range succ[i] {
			if indeg[s]--; indeg[s] == 0 {
				ready = append(ready, s)
			}
		}
	}
	if len(order) != len(w.nodes) {
		var cyc []string
		for i, n := range w.nodes {
			if indeg[i] > 0 {
				cyc = append(cyc, n.id)
			}
		}
		return nil, fmt.Errorf("cycle through nodes %s", strings.Join(cyc, ", "))
	}
	return order, nil
}

func (w *Workflow) sinks() []int {
	feeds := make([]bool, len(w.nodes))
	for _, n := range w.nodes {
		for _, e := range n.in {
			feeds[e.from] = true
		}
	}
	var out []int
	for i := range w.nodes {
		if !feeds[i] {
			out = append(out, i)
		}
	}
	return out
}

// Name is the workflow's name.
func (w *Workflow) Name() string { return w.Def.Name }

// NodeTypes lists every node type used by the workflow, batch sub-steps included.
func (w *Workflow) NodeTypes() []string {
	var ts []string
	for _, n := range w.nodes {
		ts = append(ts, n.typ)
		if b, ok := n.prep.(*batchPrep); ok {
			ts = append(ts, b.step.typ)
		}
	}
	slices.Sort(ts)
	return slices.Compact(ts)
}

// normalize turns decoded YAML or JSON into JSON's types (map[string]any,
// []any, float64, string, bool, nil), so nodes see one representation.
func normalize(m map[string]any) (map[string]any, error) {
	if m == nil {
		return map[string]any{}, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	return out, json.Unmarshal(b, &out)
}

// ParseDefinition decodes a definition strictly (unknown keys are errors):
// JSON when it starts with '{', YAML otherwise.
func ParseDefinition(b []byte) (Definition, error) {
	var d Definition
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '{' {
		// Strict: what a policy reads as parsed_body is what is stored
		// (no duplicate or case-variant keys, exact field names).
		if err := strictjson.Unmarshal(t, &d); err != nil {
			return d, fmt.Errorf("json: %w", err)
		}
		return d, nil
	}
	if err := yamlCaseVariants(b); err != nil {
		return d, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&d); err != nil {
		return d, errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return d, nil
}

// yamlCaseVariants refuses a YAML mapping with two keys equal under case
// folding, as strictjson does for JSON (yaml.v3 itself refuses exact
// duplicates). A document that does not parse is left to the decoder.
func yamlCaseVariants(b []byte) error {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil
	}
	var walk func(n *yaml.Node) error
	walk = func(n *yaml.Node) error {
		if n.Kind == yaml.MappingNode {
			seen := map[string]string{}
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				if k.Kind != yaml.ScalarNode {
					continue
				}
				f := strictjson.Fold(k.Value)
				if prev, ok := seen[f]; ok && prev != k.Value {
					return fmt.Errorf("line %d: key %q differs only in case from key %q: keys are case-sensitive and may not be repeated in another case", k.Line, k.Value, prev)
				}
				seen[f] = k.Value
			}
		}
		for _, c := range n.Content {
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(&root)
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
		d, err := ParseDefinition(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
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

// NodeTypes is every node type of the library, sorted.
func NodeTypes() []string {
	var ts []string
	for t := range library {
		ts = append(ts, t)
	}
	slices.Sort(ts)
	return ts
}
