package api

import (
	"fmt"
	"strings"
	"testing"

	"github.com/kailash-gw/kailash/workflow"
)

// TestServerCodeMemoryBypasses: through the runner's API (the default
// 64 MiB budget, the default worker), each bypass fails its own execution
// with the budget error and the runner serves the next request.
func TestServerCodeMemoryBypasses(t *testing.T) {
	wfs := map[string]*workflow.Workflow{"ok": mustCompile(t, workflow.Definition{Name: "ok", Nodes: []workflow.Node{code("result = 40 + 2")}})}
	// Scaled up so each would take several times the default budget.
	big := map[string]string{
		"index-repeat": "a = ['x' * 1000]\na[0] *= 300000\nresult = len(a[0])",
		"bound-method": "l = [0] * 1000\nf = l.extend\nfor i in range(15):\n  f(l)\nresult = len(l)",
		"getattr":      "l = [0] * 1000\nf = getattr(l, 'extend')\nfor i in range(15):\n  f(l)\nresult = len(l)",
		"int-growth":   "a = [3]\nfor i in range(30):\n  a[0] *= a[0]\nresult = 1",
	}
	for name, src := range big {
		wfs[name] = mustCompile(t, workflow.Definition{Name: name, Nodes: []workflow.Node{code(src)}})
	}
	s := newTestServer(t, wfs)
	c := apiClient{t, s.Handler(), map[string]string{"x-kailash-tenant": "acme", "x-kailash-user": "u", "x-kailash-roles": "admin"}}
	for name := range big {
		code, body := c.do("POST", "/v1/workflows/"+name+"/executions", `{}`)
		if code < 400 || !strings.Contains(fmt.Sprint(body), "memory limit exceeded") && !strings.Contains(fmt.Sprint(body), "integer too large") {
			t.Errorf("%s: %d %v, want the budget error", name, code, body)
		}
		if code, body := c.do("POST", "/v1/workflows/ok/executions", `{}`); code != 200 || !strings.Contains(fmt.Sprint(body), "42") {
			t.Fatalf("after %s: %d %v", name, code, body)
		}
	}
}
