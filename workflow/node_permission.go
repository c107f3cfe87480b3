package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/kailash-gw/kailash/internal/wire"
)

// PolicyEvaluator answers a policy decision for an input; policies.Engine
// is one.
type PolicyEvaluator interface {
	Eval(ctx context.Context, input ast.Value) (any, error)
}

// ErrDenied is a permission_check the policy denied (with on_deny: fail).
var ErrDenied = errors.New("permission denied")

type permissionPrep struct {
	permission   string
	resource     string
	resourceFrom []string // input path; overrides resource when present
	failOnDeny   bool
}

// preparePermission checks config: permission (required, e.g.
// "data:read"), resource (optional) or resource_from (an input path), and
// on_deny: "fail" (default: the execution fails) or "continue" (the output
// says allowed: false).
func preparePermission(cfg map[string]any) (any, error) {
	p := &permissionPrep{failOnDeny: true}
	var err error
	if p.permission, err = str(cfg, "permission"); err != nil {
		return nil, err
	}
	if p.permission == "" {
		return nil, errors.New("permission: required, e.g. \"data:read\"")
	}
	if p.resource, err = str(cfg, "resource"); err != nil {
		return nil, err
	}
	rf, err := str(cfg, "resource_from")
	if err != nil {
		return nil, err
	}
	if rf != "" {
		p.resourceFrom = strings.Split(rf, ".")
	}
	od, err := str(cfg, "on_deny")
	if err != nil {
		return nil, err
	}
	switch od {
	case "", "fail":
	case "continue":
		p.failOnDeny = false
	default:
		return nil, fmt.Errorf("on_deny: %q, want fail or continue", od)
	}
	return p, nil
}

// runPermission asks the policy engine whether the caller holds the
// permission on the resource. The input is the kailash/v1 schema's identity
// and tenant plus "permission", "resource" and "workflow" (name, execution,
// node). The decision may be a boolean, an object with a boolean
// "allowed" (opa-envoy-plugin's form), or a set of permissions (the default
// decision data.kailash.authz.granted): allowed when it holds the
// permission. Anything else, an undefined decision or an error fails the
// node whatever on_deny says: we cannot decide, so we fail closed. The
// output is the input with "allowed" and "permission" added.
func runPermission(ctx context.Context, x *Executor, c *call) (map[string]any, error) {
	p := c.node.prep.(*permissionPrep)
	if x.policy == nil {
		return nil, errors.New("the runner has no policy engine")
	}
	resource := p.resource
	if p.resourceFrom != nil {
		if v, ok := lookupPath(c.input, p.resourceFrom); ok {
			resource = fmt.Sprint(v)
		}
	}
	cl := c.ex.c
	input := map[string]any{
		"version":    map[string]any{wire.PolicyInputKey: wire.PolicyInputVersion},
		"identity":   map[string]any{"sub": cl.User, "tenant": cl.Tenant, "roles": anySlice(cl.Roles)},
		"tenant":     map[string]any{"id": cl.Tenant},
		"permission": p.permission,
		"resource":   resource,
		"workflow":   map[string]any{"name": c.ex.w.Def.Name, "execution_id": c.ex.id, "node": c.node.id},
	}
	v, err := ast.InterfaceToValue(input)
	if err != nil {
		return nil, err
	}
	dec, err := x.policy.Eval(ctx, v)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	allowed, err := DecisionAllows(dec, p.permission)
	if err != nil {
		return nil, err
	}
	x.log.InfoContext(ctx, "permission_check", "tenant", cl.Tenant, "user", cl.User, "permission", p.permission,
		"resource", resource, "allowed", allowed, "execution", c.ex.id, "node", c.node.id)
	if !allowed && p.failOnDeny {
		return nil, fmt.Errorf("%w: %s lacks %s%s", ErrDenied, cl.User, p.permission, onResource(resource))
	}
	out := maps.Clone(c.input)
	if out == nil {
		out = map[string]any{}
	}
	out["allowed"], out["permission"] = allowed, p.permission
	return out, nil
}

func onResource(r string) string {
	if r == "" {
		return ""
	}
	return " on " + r
}

// DecisionAllows reads a permission decision (a boolean, {"allowed": bool}
// or a set of permissions) for permission; a shape it does not know is an
// error.
func DecisionAllows(dec any, permission string) (bool, error) {
	switch d := dec.(type) {
	case bool:
		return d, nil
	case map[string]any:
		if a, ok := d["allowed"].(bool); ok {
			return a, nil
		}
		return false, errors.New("policy: the decision object has no boolean \"allowed\"")
	case []any:
		return slices.ContainsFunc(d, func(e any) bool { s, ok := e.(string); return ok && s == permission }), nil
	}
	return false, fmt.Errorf("policy: a %T decision is neither a boolean, an object with allowed, nor a set of permissions", dec)
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// DefaultPermissionDecision is the decision permission_check evaluates
// unless runner.permission_decision names another: the shipped bundle's set
// of permissions the caller's roles grant.
const DefaultPermissionDecision = "kailash/authz/granted"
