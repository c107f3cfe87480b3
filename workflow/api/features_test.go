package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/workflow"
)

// The server builds its own engine over the embedded bundle when none is
// injected.
func TestServerPermissionCheckDefaultEngine(t *testing.T) {
	s := newTestServer(t, map[string]*workflow.Workflow{"pc": permissionWorkflow(t, nil)})
	for roles, want := range map[string]int{"data_scientist": 200, "business_user": 422} {
		c := apiClient{t, s.Handler(), map[string]string{"x-kailash-tenant": "acme", "x-kailash-user": "u", "x-kailash-roles": roles}}
		if code, body := c.do("POST", "/v1/workflows/pc/executions", `{}`); code != want {
			t.Errorf("%s: %d %v, want %d", roles, code, body, want)
		}
	}
}

func TestServerRoleLimitsOnCreate(t *testing.T) {
	s := newTestServerCfg(t, nil, config.Runner{RoleLimits: map[string]config.RunnerLimits{"intern": {MaxNodes: 1}}})
	def := `{"name":"two","nodes":[{"id":"a","type":"identity"},{"id":"b","type":"identity"}]}`
	intern := apiClient{t, s.Handler(), map[string]string{"x-kailash-tenant": "acme", "x-kailash-user": "i", "x-kailash-roles": "intern"}}
	if code, body := intern.do("POST", "/v1/workflows", def); code != 403 || body["limit"] != "max_nodes" {
		t.Fatalf("intern creates 2 nodes: %d %v", code, body)
	}
	admin := apiClient{t, s.Handler(), map[string]string{"x-kailash-tenant": "acme", "x-kailash-user": "a", "x-kailash-roles": "admin"}}
	if code, body := admin.do("POST", "/v1/workflows", def); code != 201 {
		t.Fatalf("admin: %d %v", code, body)
	}
	if code, body := intern.do("POST", "/v1/workflows/two/executions", `{}`); code != 403 || body["limit"] != "max_nodes" {
		t.Fatalf("intern executes 2 nodes: %d %v", code, body)
	}
}

func TestTenantWorkflowsCompiledOnce(t *testing.T) {
	s := newTestServer(t, nil)
	c := apiClient{t, s.Handler(), map[string]string{"x-kailash-tenant": "acme", "x-kailash-user": "a"}}
	def := `{"name":"c","nodes":[{"id":"c","type":"code","config":{"code":"result = 1"}}]}`
	if code, _ := c.do("POST", "/v1/workflows", def); code != 201 {
		t.Fatal(code)
	}
	w1, _, err := s.lookup(t.Context(), "acme", "c")
	if err != nil {
		t.Fatal(err)
	}
	w2, _, _ := s.lookup(t.Context(), "acme", "c")
	if w1 != w2 {
		t.Fatal("the workflow was compiled again")
	}
	// A new definition under the same name is compiled anew.
	c.do("DELETE", "/v1/workflows/c", "")
	c.do("POST", "/v1/workflows", strings.Replace(def, "result = 1", "result = 2", 1))
	code, body := c.do("POST", "/v1/workflows/c/executions", `{}`)
	if code != 200 || body["output"].(map[string]any)["result"] != 2.0 {
		t.Fatalf("after redefinition: %d %v", code, body)
	}
}

func wsDial(t *testing.T, url string, hdr map[string]string) (*websocket.Conn, *http.Response, error) {
	h := http.Header{}
	for k, v := range hdr {
		h.Set(k, v)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	return websocket.Dial(ctx, strings.Replace(url, "http://", "ws://", 1), &websocket.DialOptions{HTTPHeader: h})
}

func TestWebSocketEventsFiltered(t *testing.T) {
	wfs, err := workflow.LoadDir("../../examples/workflows")
	if err != nil {
		t.Fatal(err)
	}
	secret := mustCompile(t, workflow.Definition{Name: "secret", Nodes: []workflow.Node{{ID: "a", Type: "identity"}},
		Events: workflow.EventPolicy{RequiredPermission: "audit:view", Classification: "secret"}})
	wfs["secret"] = secret
	s := newTestServer(t, wfs)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)

	if _, resp, err := wsDial(t, srv.URL+"/v1/events/ws", nil); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("no identity: %v %v", err, resp)
	}
	type sub struct {
		name string
		conn *websocket.Conn
	}
	dial := func(name, tenant, roles string) sub {
		conn, _, err := wsDial(t, srv.URL+"/v1/events/ws", map[string]string{"x-kailash-tenant": tenant, "x-kailash-user": name, "x-kailash-roles": roles})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.CloseNow() })
		var hello map[string]any
		if err := readJSON(t, conn, &hello); err != nil || hello["type"] != "subscribed" {
			t.Fatalf("%s: %v %v", name, err, hello)
		}
		return sub{name, conn}
	}
	alice := dial("alice", "acme", "")                                // public, no audit:view
	carol := dial("carol", "acme", "audit:view,clearance:secret")     // sees everything of acme
	gary := dial("gary", "globex", "admin,clearance:secret")          // another tenant
	dave := dial("dave", "acme", "audit:view,clearance:confidential") // not cleared for secret

	exec := func(tenant, wf string) {
		c := apiClient{t, s.Handler(), map[string]string{"x-kailash-tenant": tenant, "x-kailash-user": "u"}}
		if code, body := c.do("POST", "/v1/workflows/"+wf+"/executions", `{}`); code != 200 {
			t.Fatalf("execute %s: %d %v", wf, code, body)
		}
	}
	exec("acme", "secret")
	exec("acme", "hello")

	events := func(s sub, n int) []string {
		var got []string
		for range n {
			var e map[string]any
			if err := readJSON(t, s.conn, &e); err != nil {
				t.Fatalf("%s after %v: %v", s.name, got, err)
			}
			if e["tenant"] != "acme" {
				t.Fatalf("%s saw %v", s.name, e)
			}
			got = append(got, e["workflow"].(string)+":"+e["type"].(string))
		}
		return got
	}
	hello := "hello:execution.started,hello:node.finished,hello:node.finished,hello:execution.completed"
	if got := strings.Join(events(alice, 4), ","); got != hello {
		t.Errorf("alice: %s", got)
	}
	if got := strings.Join(events(dave, 4), ","); got != hello {
		t.Errorf("dave: %s", got)
	}
	if got := strings.Join(events(carol, 7), ","); got != "secret:execution.started,secret:node.finished,secret:execution.completed,"+hello {
		t.Errorf("carol: %s", got)
	}
	// gary (globex) gets nothing within a moment.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, b, err := gary.conn.Read(ctx); err == nil {
		t.Fatalf("globex saw %s", b)
	}
}

func readJSON(t *testing.T, c *websocket.Conn, v any) error {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// A policy bundle that cannot be loaded fails every permission_check
// (closed), and only those.
func TestServerPermissionCheckBadBundleFailsClosed(t *testing.T) {
	wfs, err := workflow.LoadDir("../../examples/workflows")
	if err != nil {
		t.Fatal(err)
	}
	wfs["pc"] = permissionWorkflow(t, map[string]any{"on_deny": "continue"})
	s, err := New(&config.Config{Runner: config.Runner{HTTP: "127.0.0.1:0"}, Policy: config.Policy{Bundle: t.TempDir() + "/missing"}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.ln.Close(); s.shutdown() })
	s.workflows.Store(&wfs)
	c := apiClient{t, s.Handler(), map[string]string{"x-kailash-tenant": "acme", "x-kailash-user": "u", "x-kailash-roles": "admin"}}
	if code, body := c.do("POST", "/v1/workflows/pc/executions", `{}`); code != 422 || !strings.Contains(body["message"].(string), "permission_check") {
		t.Fatalf("pc: %d %v", code, body)
	}
	if code, body := c.do("POST", "/v1/workflows/hello/executions", `{}`); code != 200 {
		t.Fatalf("hello: %d %v", code, body)
	}
}
