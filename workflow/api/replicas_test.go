package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/open-policy-agent/opa/v1/ast"
)

// gate is an upstream whose requests wait until open is closed.
func gate(t *testing.T) (host string, arrived <-chan struct{}, open chan struct{}) {
	arr := make(chan struct{}, 16)
	open = make(chan struct{})
	host = upstream(t, func(w http.ResponseWriter, r *http.Request) {
		arr <- struct{}{}
		select {
		case <-open:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"answer":42}`))
		case <-r.Context().Done():
		}
	})
	return host, arr, open
}

const gatedWorkflow = `{"name":"gated","nodes":[{"id":"first","type":"identity"},{"id":"wait","type":"http","config":{"url":"http://%s/wait"}}],"connections":[{"from":"first","to":"wait"}]}`

func client(t *testing.T, s *Server) apiClient {
	return apiClient{t, s.Handler(), map[string]string{"x-kailash-tenant": "acme", "x-kailash-user": "alice"}}
}

// Two runners on one PostgreSQL: the second starting mid-execution leaves
// the first one's execution running, and the first one's result is stored
// (before leases it was marked interrupted and the result dropped).
func TestTwoRunnersOnOnePostgres(t *testing.T) {
	pg := testenv.StartPostgres(t)
	host, arrived, open := gate(t)
	r := config.Runner{PostgresDSN: pg.DSN, HTTPAllow: []string{host}}
	a := client(t, newTestServerCfg(t, nil, r))
	if code, body := a.do("POST", "/v1/workflows", fmt.Sprintf(gatedWorkflow, host)); code != 201 {
		t.Fatalf("create: %d %v", code, body)
	}
	code, body := a.do("POST", "/v1/workflows/gated/executions?async=true", `{}`)
	if code != 202 {
		t.Fatalf("start: %d %v", code, body)
	}
	id := body["execution_id"].(string)
	select {
	case <-arrived:
	case <-time.After(20 * time.Second):
		t.Fatal("the execution never reached its slow node")
	}

	b := client(t, newTestServerCfg(t, nil, r)) // the second replica starts now
	if _, body := b.do("GET", "/v1/workflows/gated/executions/"+id, ""); body["status"] != "running" {
		t.Fatalf("the second runner's start touched the first one's execution: %v", body)
	}
	close(open)
	testenv.Eventually(t, 20*time.Second, func() error {
		_, body := b.do("GET", "/v1/workflows/gated/executions/"+id, "")
		out, _ := body["output"].(map[string]any)
		if body["status"] != "completed" || out == nil || !strings.Contains(fmt.Sprint(out), "42") {
			return fmt.Errorf("the first runner's result is not stored: %v", body)
		}
		return nil
	})
}

// max_concurrent_executions holds across runners: with one slot taken on
// the first runner, the second refuses with 429.
func TestConcurrencyLimitAcrossRunners(t *testing.T) {
	pg := testenv.StartPostgres(t)
	host, arrived, open := gate(t)
	defer close(open)
	r := config.Runner{PostgresDSN: pg.DSN, HTTPAllow: []string{host}, Limits: config.RunnerLimits{MaxConcurrentExecutions: 1}}
	a, b := client(t, newTestServerCfg(t, nil, r)), client(t, newTestServerCfg(t, nil, r))
	if code, body := a.do("POST", "/v1/workflows", fmt.Sprintf(gatedWorkflow, host)); code != 201 {
		t.Fatalf("create: %d %v", code, body)
	}
	if code, body := a.do("POST", "/v1/workflows/gated/executions?async=true", `{}`); code != 202 {
		t.Fatalf("start: %d %v", code, body)
	}
	<-arrived
	code, body := b.do("POST", "/v1/workflows/gated/executions?async=true", `{}`)
	if code != http.StatusTooManyRequests || body["limit"] != "max_concurrent_executions" {
		t.Fatalf("a second execution on the other runner: %d %v", code, body)
	}
}

// runner.role_limits holds across runners: with an analyst's execution
// running on the first runner, an analyst on the second is refused with
// 429 naming the role (the second runner's own count is zero: the refusal
// is PostgreSQL's), synchronously too, while a caller without the role is
// admitted there.
func TestRoleLimitAcrossRunners(t *testing.T) {
	pg := testenv.StartPostgres(t)
	host, arrived, open := gate(t)
	r := config.Runner{PostgresDSN: pg.DSN, HTTPAllow: []string{host},
		RoleLimits: map[string]config.RunnerLimits{"analyst": {MaxConcurrentExecutions: 1}}}
	sa, sb := newTestServerCfg(t, nil, r), newTestServerCfg(t, nil, r)
	as := func(s *Server, user, roles string) apiClient {
		c := client(t, s)
		c.hdr = map[string]string{"x-kailash-tenant": "acme", "x-kailash-user": user, "x-kailash-roles": roles}
		return c
	}
	a, b := as(sa, "ann", "analyst"), as(sb, "bea", "analyst,viewer")
	if code, body := a.do("POST", "/v1/workflows", fmt.Sprintf(gatedWorkflow, host)); code != 201 {
		t.Fatalf("create: %d %v", code, body)
	}
	code, body := a.do("POST", "/v1/workflows/gated/executions?async=true", `{}`)
	if code != 202 {
		t.Fatalf("start: %d %v", code, body)
	}
	first := body["execution_id"].(string)
	<-arrived
	for _, q := range []string{"?async=true", ""} {
		code, body := b.do("POST", "/v1/workflows/gated/executions"+q, `{}`)
		if code != http.StatusTooManyRequests || body["limit"] != "max_concurrent_executions" || !strings.Contains(fmt.Sprint(body["message"]), "role analyst") {
			t.Fatalf("an analyst on the other runner (%q): %d %v", q, code, body)
		}
	}
	v := as(sb, "vic", "viewer")
	code, body = v.do("POST", "/v1/workflows/gated/executions?async=true", `{}`)
	if code != 202 {
		t.Fatalf("a viewer on the other runner: %d %v", code, body)
	}
	viewer := body["execution_id"].(string)
	<-arrived
	close(open)
	for _, c := range []struct {
		cl apiClient
		id string
	}{{a, first}, {v, viewer}} {
		testenv.Eventually(t, 20*time.Second, func() error {
			if _, body := c.cl.do("GET", "/v1/workflows/gated/executions/"+c.id, ""); body["status"] != "completed" {
				return fmt.Errorf("execution %s: %v", c.id, body)
			}
			return nil
		})
	}
	// The slot is free again: the analyst on the second runner runs.
	if code, body := b.do("POST", "/v1/workflows/gated/executions", `{}`); code != 200 {
		t.Fatalf("an analyst once the first ended: %d %v", code, body)
	}
}

// A second runner on the same SQLite data directory is refused at start.
func TestSecondSQLiteRunnerRefused(t *testing.T) {
	dir := t.TempDir()
	newTestServerCfg(t, nil, config.Runner{DataDir: dir})
	_, err := New(&config.Config{Runner: config.Runner{HTTP: config.MustHostPort("127.0.0.1:0"), DataDir: dir}}, Options{})
	if err == nil || !strings.Contains(err.Error(), "another runner holds") {
		t.Fatalf("second runner on %s: %v", dir, err)
	}
}

// A cancel sent to another replica reaches the one running the execution
// (PostgreSQL LISTEN/NOTIFY), after the same checks: the starter may, a
// stranger of the tenant may not.
func TestCancelReachesTheOwningRunner(t *testing.T) {
	pg := testenv.StartPostgres(t)
	host, arrived, open := gate(t)
	defer close(open)
	r := config.Runner{PostgresDSN: pg.DSN, HTTPAllow: []string{host}}
	sa, sb := newTestServerCfg(t, nil, r), newTestServerCfg(t, nil, r)
	sb.policy = policyFunc(func(context.Context, ast.Value) (any, error) { return false, nil }) // nobody holds cancel_any
	a, b := client(t, sa), client(t, sb)
	if code, body := a.do("POST", "/v1/workflows", fmt.Sprintf(gatedWorkflow, host)); code != 201 {
		t.Fatalf("create: %d %v", code, body)
	}
	code, body := a.do("POST", "/v1/workflows/gated/executions?async=true", `{}`)
	if code != 202 {
		t.Fatalf("start: %d %v", code, body)
	}
	id := body["execution_id"].(string)
	<-arrived
	mallory := apiClient{t, sb.Handler(), map[string]string{"x-kailash-tenant": "acme", "x-kailash-user": "mallory"}}
	if code, body := mallory.do("POST", "/v1/workflows/gated/executions/"+id+"/cancel", ""); code != http.StatusForbidden {
		t.Fatalf("a stranger's cancel through the other runner: %d %v", code, body)
	}
	if code, body := b.do("POST", "/v1/workflows/gated/executions/"+id+"/cancel", ""); code != http.StatusAccepted {
		t.Fatalf("the starter's cancel through the other runner: %d %v", code, body)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		_, body := b.do("GET", "/v1/workflows/gated/executions/"+id, "")
		if body["status"] != "cancelled" || !strings.Contains(fmt.Sprint(body["error"]), "alice") {
			return fmt.Errorf("not cancelled: %v", body)
		}
		return nil
	})
}

// An event stream on one replica shows the executions another replica
// runs (PostgreSQL LISTEN/NOTIFY), filtered as local ones are.
func TestEventStreamAcrossRunners(t *testing.T) {
	pg := testenv.StartPostgres(t)
	host, _, open := gate(t)
	close(open)
	r := config.Runner{PostgresDSN: pg.DSN, HTTPAllow: []string{host}}
	sa, sb := newTestServerCfg(t, nil, r), newTestServerCfg(t, nil, r)
	sb.eventPol = policyFunc(func(context.Context, ast.Value) (any, error) { return true, nil })
	srv := httptest.NewServer(sb.Handler())
	defer srv.Close()
	a := client(t, sa)
	if code, body := a.do("POST", "/v1/workflows", fmt.Sprintf(gatedWorkflow, host)); code != 201 {
		t.Fatalf("create: %d %v", code, body)
	}
	subscribe := func(tenant string) (<-chan string, func()) {
		ctx, cancel := context.WithCancel(t.Context())
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/events", nil)
		req.Header.Set("x-kailash-tenant", tenant)
		req.Header.Set("x-kailash-user", "alice")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("subscribe: %v %v", err, resp)
		}
		lines := make(chan string, 64)
		go func() {
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if l, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
					lines <- l
				}
			}
		}()
		return lines, cancel
	}
	acme, stopAcme := subscribe("acme")
	defer stopAcme()
	globex, stopGlobex := subscribe("globex")
	defer stopGlobex()
	code, body := a.do("POST", "/v1/workflows/gated/executions", `{}`) // runs on a
	if code != 200 {
		t.Fatalf("execute: %d %v", code, body)
	}
	id := body["execution_id"].(string)
	var types []string
	deadline := time.After(20 * time.Second)
	for !slices.Contains(types, "execution.completed") {
		select {
		case l := <-acme:
			var e map[string]any
			_ = json.Unmarshal([]byte(l), &e)
			if e["execution_id"] == id {
				types = append(types, fmt.Sprint(e["type"]))
			}
		case <-deadline:
			t.Fatalf("events on the other runner: %v", types)
		}
	}
	if types[0] != "execution.started" || len(types) != 4 {
		t.Fatalf("events: %v", types)
	}
	select {
	case l := <-globex:
		t.Fatalf("another tenant saw an event: %s", l)
	case <-time.After(300 * time.Millisecond):
	}
}

// Executions read the workflow definition from a cache: a PUT or DELETE
// through one runner reaches the other's executions through the
// notification alone (the cache's lifetime is set to an hour here, so
// only the notification can drop the entry), and at once on the runner
// that made the change.
func TestWorkflowChangeReachesOtherRunner(t *testing.T) {
	old := defTTL
	defTTL = time.Hour
	t.Cleanup(func() { defTTL = old })
	pg := testenv.StartPostgres(t)
	r := config.Runner{PostgresDSN: pg.DSN}
	a, b := client(t, newTestServerCfg(t, nil, r)), client(t, newTestServerCfg(t, nil, r))
	for _, c := range []*apiClient{&a, &b} {
		c.hdr = map[string]string{"x-kailash-tenant": "acme", "x-kailash-user": "ann"}
	}
	answer := func(c apiClient) any {
		t.Helper()
		code, body := c.do("POST", "/v1/workflows/w/executions", `{}`)
		if code != 200 {
			return code
		}
		out, _ := body["output"].(map[string]any)
		res, _ := out["result"].(map[string]any)
		return res["v"]
	}
	if code, body := a.do("POST", "/v1/workflows", versionedWorkflow(1)); code != 201 {
		t.Fatalf("create: %d %v", code, body)
	}
	if v := answer(b); v != float64(1) { // b caches version 1
		t.Fatalf("the other runner answered %v", v)
	}
	if code, body, _ := a.doH("PUT", "/v1/workflows/w", versionedWorkflow(2), map[string]string{"If-Match": `"1"`}); code != 200 {
		t.Fatalf("PUT: %d %v", code, body)
	}
	if v := answer(a); v != float64(2) {
		t.Fatalf("the runner that made the change answered %v", v)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if v := answer(b); v != float64(2) {
			return fmt.Errorf("the other runner still answers %v", v)
		}
		return nil
	})
	if code, _ := b.do("DELETE", "/v1/workflows/w", ""); code != http.StatusNoContent {
		t.Fatalf("delete: %d", code)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if v := answer(a); v != http.StatusNotFound {
			return fmt.Errorf("after the delete on the other runner: %v", v)
		}
		return nil
	})
}
