package workflow

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/policies"
	"github.com/kailash-gw/kailash/workflow/store"
)

// --- permission_check ---------------------------------------------------------

func permissionWorkflow(t *testing.T, extra map[string]any) *Workflow {
	cfg := map[string]any{"permission": "data:read", "resource": "reports"}
	for k, v := range extra {
		cfg[k] = v
	}
	return mustCompile(t, Definition{Name: "pc", Nodes: []Node{{ID: "check", Type: "permission_check", Config: cfg}, {ID: "after", Type: "identity"}},
		Connections: []Connection{{From: "check", To: "after"}}})
}

// The shipped bundle's data.kailash.authz.granted: data_scientist holds
// data:read, business_user does not.
func TestPermissionCheckWithShippedBundle(t *testing.T) {
	eng, err := policies.NewEngine(t.Context(), policies.EngineOptions{Decision: DefaultPermissionDecision})
	if err != nil {
		t.Fatal(err)
	}
	x := NewExecutor(ExecutorOptions{Policy: eng})
	w := permissionWorkflow(t, nil)
	scientist := Caller{Tenant: "acme", User: "dana", Roles: []string{"data_scientist"}}
	res, err := x.Run(t.Context(), w, map[string]any{"q": 1.0}, scientist, RunOptions{})
	if err != nil || res.Output["allowed"] != true || res.Output["q"] != 1.0 {
		t.Fatalf("allowed: %v %+v", err, res)
	}
	biz := Caller{Tenant: "acme", User: "bo", Roles: []string{"business_user"}}
	_, err = x.Run(t.Context(), w, nil, biz, RunOptions{})
	if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), `node "check"`) {
		t.Fatalf("denied: %v", err)
	}
	res, err = x.Run(t.Context(), permissionWorkflow(t, map[string]any{"on_deny": "continue"}), nil, biz, RunOptions{})
	if err != nil || res.Output["allowed"] != false {
		t.Fatalf("on_deny continue: %v %+v", err, res)
	}
}

type policyFunc func(ctx context.Context, input ast.Value) (any, error)

func (f policyFunc) Eval(ctx context.Context, input ast.Value) (any, error) { return f(ctx, input) }

func TestPermissionCheckDecisionShapesAndFailClosed(t *testing.T) {
	var seen map[string]any
	cases := []struct {
		name    string
		dec     any
		err     error
		allowed bool
		fails   bool
	}{
		{"bool true", true, nil, true, false},
		{"bool false", false, nil, false, false},
		{"object", map[string]any{"allowed": true}, nil, true, false},
		{"set", []any{"x:y", "data:read"}, nil, true, false},
		{"set without", []any{"x:y"}, nil, false, false},
		{"undefined", nil, policies.ErrUndefined, false, true},
		{"string", "yes", nil, false, true},
		{"object without allowed", map[string]any{"ok": true}, nil, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x := NewExecutor(ExecutorOptions{Policy: policyFunc(func(_ context.Context, in ast.Value) (any, error) {
				v, _ := ast.JSON(in)
				seen, _ = v.(map[string]any)
				return tc.dec, tc.err
			})})
			// on_deny: continue, so only "cannot decide" fails.
			res, err := x.Run(t.Context(), permissionWorkflow(t, map[string]any{"on_deny": "continue", "resource_from": "doc.id"}),
				map[string]any{"doc": map[string]any{"id": "r-7"}}, Caller{Tenant: "acme", User: "u", Roles: []string{"r1"}}, RunOptions{ID: "ex1"})
			if tc.fails {
				if err == nil {
					t.Fatalf("decision %v: no error", tc.dec)
				}
				return
			}
			if err != nil || res.Output["allowed"] != tc.allowed {
				t.Fatalf("%v %+v", err, res)
			}
		})
	}
	id := seen["identity"].(map[string]any)
	if seen["permission"] != "data:read" || seen["resource"] != "r-7" || id["sub"] != "u" || id["tenant"] != "acme" ||
		seen["workflow"].(map[string]any)["execution_id"] != "ex1" {
		t.Fatalf("policy input %v", seen)
	}
	x := NewExecutor(ExecutorOptions{}) // no engine: fail closed
	if _, err := x.Run(t.Context(), permissionWorkflow(t, map[string]any{"on_deny": "continue"}), nil, acme, RunOptions{}); err == nil {
		t.Fatal("no policy engine, yet the check passed")
	}
	if _, err := Compile(Definition{Name: "w", Nodes: []Node{{ID: "c", Type: "permission_check"}}}); err == nil {
		t.Fatal("a permission_check without permission compiled")
	}
}

// --- role limits ---------------------------------------------------------------

func TestRoleLimitsStricterWins(t *testing.T) {
	x := NewExecutor(ExecutorOptions{
		Limits:       config.RunnerLimits{MaxNodes: 10, MaxExecutionTime: time.Minute},
		TenantLimits: map[string]config.RunnerLimits{"acme": {MaxNodes: 5, AllowedNodeTypes: []string{"identity", "transform", "code"}}},
		RoleLimits: map[string]config.RunnerLimits{
			"intern":  {MaxNodes: 2, MaxExecutionTime: time.Second, AllowedNodeTypes: []string{"identity", "http"}, MaxConcurrentExecutions: 1},
			"analyst": {MaxNodes: 50, CodeMaxSteps: 1000}, // looser than the tenant: the tenant's wins
		},
	})
	l := x.LimitsFor(Caller{Tenant: "acme", Roles: []string{"intern"}})
	if l.MaxNodes != 2 || l.MaxExecutionTime != time.Second || strings.Join(l.AllowedNodeTypes, ",") != "identity" {
		t.Fatalf("intern in acme: %+v", l)
	}
	l = x.LimitsFor(Caller{Tenant: "acme", Roles: []string{"analyst"}})
	if l.MaxNodes != 5 || l.CodeMaxSteps != 1000 || l.MaxExecutionTime != time.Minute {
		t.Fatalf("analyst in acme: %+v", l)
	}
	l = x.LimitsFor(Caller{Tenant: "globex", Roles: []string{"intern", "analyst"}})
	if l.MaxNodes != 2 || strings.Join(l.AllowedNodeTypes, ",") != "identity,http" || l.CodeMaxSteps != 1000 {
		t.Fatalf("intern+analyst in globex: %+v", l)
	}

	three := mustCompile(t, Definition{Name: "three", Nodes: []Node{{ID: "a", Type: "identity"}, {ID: "b", Type: "identity"}, {ID: "c", Type: "identity"}}})
	var le *LimitError
	if _, err := x.Run(t.Context(), three, nil, Caller{Tenant: "acme", User: "i", Roles: []string{"intern"}}, RunOptions{}); !errors.As(err, &le) || le.Limit != "max_nodes" {
		t.Fatalf("intern runs 3 nodes: %v", err)
	}
	if _, err := x.Run(t.Context(), three, nil, Caller{Tenant: "acme", User: "a", Roles: []string{"analyst"}}, RunOptions{}); err != nil {
		t.Fatalf("analyst: %v", err)
	}
	code := mustCompile(t, Definition{Name: "code", Nodes: []Node{{ID: "c", Type: "code", Config: map[string]any{"code": "result = 1"}}}})
	if _, err := x.Run(t.Context(), code, nil, Caller{Tenant: "acme", User: "i", Roles: []string{"intern"}}, RunOptions{}); !errors.As(err, &le) || le.Limit != "allowed_node_types" {
		t.Fatalf("intern runs code: %v", err)
	}
	// code_max_steps from the analyst role.
	loop := mustCompile(t, Definition{Name: "loop", Nodes: []Node{{ID: "c", Type: "code", Config: map[string]any{"code": "t = 0\nfor i in range(10000):\n  t += i\nresult = t"}}}})
	if _, err := x.Run(t.Context(), loop, nil, Caller{Tenant: "acme", User: "a", Roles: []string{"analyst"}}, RunOptions{}); err == nil {
		t.Fatal("analyst's code_max_steps did not apply")
	}
	if _, err := x.Run(t.Context(), loop, nil, Caller{Tenant: "acme", User: "b"}, RunOptions{}); err != nil {
		t.Fatalf("no role: %v", err)
	}

	// max_concurrent_executions per (tenant, role): one intern execution at a
	// time in acme; globex's interns and acme's other users are not held.
	one := mustCompile(t, Definition{Name: "one", Nodes: []Node{{ID: "a", Type: "identity"}}})
	r1, err := x.Reserve(one, Caller{Tenant: "acme", User: "i1", Roles: []string{"intern"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.Reserve(one, Caller{Tenant: "acme", User: "i2", Roles: []string{"intern"}}); !errors.As(err, &le) || le.Limit != "max_concurrent_executions" {
		t.Fatalf("second intern: %v", err)
	}
	r2, err := x.Reserve(one, Caller{Tenant: "globex", User: "i3", Roles: []string{"intern"}})
	if err != nil {
		t.Fatalf("globex intern: %v", err)
	}
	r3, err := x.Reserve(one, Caller{Tenant: "acme", User: "a", Roles: []string{"analyst"}})
	if err != nil {
		t.Fatalf("acme analyst: %v", err)
	}
	r1.Release()
	r1.Release() // idempotent
	r4, err := x.Reserve(one, Caller{Tenant: "acme", User: "i2", Roles: []string{"intern"}})
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	r2.Release()
	r3.Release()
	r4.Release()
	if x.Running("acme") != 0 || len(x.roleRunning) != 0 {
		t.Fatalf("counters leak: %d %v", x.Running("acme"), x.roleRunning)
	}
}

// --- compile cache ---------------------------------------------------------------

// --- WebSocket events --------------------------------------------------------------

func TestCustomerReportExample(t *testing.T) {
	wfs, err := LoadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenStore(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, q := range []store.TenantQuery{
		{SQL: `CREATE TABLE orders (id TEXT, customer_id TEXT, total REAL)`},
		{SQL: `INSERT INTO orders VALUES ($1, $2, $3), ($4, $5, $6), ($7, $8, $9)`, Args: []any{"o1", "c-1", 10.5, "o2", "c-1", 4.5, "o3", "c-2", 99.0}},
	} {
		q.MaxRows = 1
		if _, err := st.TenantQuery(t.Context(), "acme", q); err != nil {
			t.Fatal(err)
		}
	}
	eng, err := policies.NewEngine(t.Context(), policies.EngineOptions{Decision: DefaultPermissionDecision})
	if err != nil {
		t.Fatal(err)
	}
	x := NewExecutor(ExecutorOptions{Store: st, Policy: eng})
	in := map[string]any{"customer": map[string]any{"id": "c-1"}}
	res, err := x.Run(t.Context(), wfs["customer-report"], in, Caller{Tenant: "acme", User: "dana", Roles: []string{"data_scientist"}}, RunOptions{})
	if err != nil || res.Output["total"] != 15.0 || len(res.Output["orders"].([]any)) != 2 {
		t.Fatalf("%v %+v", err, res)
	}
	if _, err := x.Run(t.Context(), wfs["customer-report"], in, Caller{Tenant: "acme", User: "bo", Roles: []string{"business_user"}}, RunOptions{}); !errors.Is(err, ErrDenied) {
		t.Fatalf("business_user: %v", err)
	}
}
