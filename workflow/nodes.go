package workflow

import (
	"context"
	"fmt"
	"maps"
)

// Caller is who the execution runs for (from the identity ext_authz attached).
type Caller struct {
	Tenant string   `json:"tenant"`
	User   string   `json:"user"`
	Roles  []string `json:"roles"`
}

// NodeFunc runs one node: it gets the node's config, the merged outputs of
// its inputs (or the execution input for a root node) and the caller.
type NodeFunc func(ctx context.Context, cfg map[string]any, in map[string]any, c Caller) (map[string]any, error)

// library is the node types the runner knows. More arrive with the full
// node library (code, http, sql, permission_check, ...).
var library = map[string]NodeFunc{
	"transform": transformNode,
	"identity":  identityNode,
}

// transformNode copies its input and applies config: "set" (fields to add or
// overwrite), "remove" (fields to drop), "rename" (old -> new).
func transformNode(_ context.Context, cfg map[string]any, in map[string]any, _ Caller) (map[string]any, error) {
	out := maps.Clone(in)
	if out == nil {
		out = map[string]any{}
	}
	if rm, ok := cfg["remove"].([]any); ok {
		for _, k := range rm {
			delete(out, fmt.Sprint(k))
		}
	}
	if rn, ok := cfg["rename"].(map[string]any); ok {
		for from, to := range rn {
			if v, ok := out[from]; ok {
				delete(out, from)
				out[fmt.Sprint(to)] = v
			}
		}
	}
	if set, ok := cfg["set"].(map[string]any); ok {
		maps.Copy(out, set)
	}
	return out, nil
}

// identityNode attaches the caller's identity under "identity".
func identityNode(_ context.Context, _ map[string]any, in map[string]any, c Caller) (map[string]any, error) {
	out := maps.Clone(in)
	if out == nil {
		out = map[string]any{}
	}
	out["identity"] = map[string]any{"tenant": c.Tenant, "user": c.User, "roles": c.Roles}
	return out, nil
}

// Result of one execution.
type Result struct {
	Output map[string]any            `json:"output"`
	Nodes  map[string]map[string]any `json:"nodes"`
}

// Execute runs the workflow in topological order. A node's input is its
// single predecessor's output, the merge of several, or input for a root.
func (w *Workflow) Execute(ctx context.Context, input map[string]any, c Caller) (*Result, error) {
	res := &Result{Nodes: map[string]map[string]any{}}
	var last map[string]any
	for _, id := range w.order {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("node %q: %w", id, err)
		}
		n := w.nodes[id]
		in := input
		if ps := w.preds[id]; len(ps) > 0 {
			in = map[string]any{}
			for _, p := range ps {
				maps.Copy(in, res.Nodes[p])
			}
		}
		out, err := library[n.Type](ctx, n.Config, in, c)
		if err != nil {
			return nil, fmt.Errorf("node %q (%s): %w", id, n.Type, err)
		}
		res.Nodes[id] = out
		last = out
	}
	res.Output = last
	return res, nil
}
