package api

// Issue 16, bypasses 2–4 through the runner's API, with identity tokens and
// the shipped bundle (its data labelling acme's "payroll" workflow).

import (
	"bufio"
	"context"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/internal/wire"
	"github.com/kailash-gw/kailash/policies"
	"github.com/kailash-gw/kailash/workflow"
	"github.com/kailash-gw/kailash/workflow/store"
)

// payrollLabels labels acme's payroll workflow: department hr, confidential.
var payrollLabels = map[string]any{"acme": map[string]any{"workflows": map[string]any{
	"payroll": map[string]any{"department": "hr", "classification": "confidential"},
}}}

// labelledBundle copies the shipped bundle with tenants set in its data.
func labelledBundle(t *testing.T, tenants map[string]any) string {
	t.Helper()
	dir := t.TempDir()
	err := filepath.WalkDir("../../policies/bundle", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel("../../policies/bundle", p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(rel)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	setTenants(t, dir, tenants)
	return dir
}

func setTenants(t *testing.T, dir string, tenants map[string]any) {
	t.Helper()
	p := filepath.Join(dir, "kailash", "config", "data.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var data map[string]any
	if err := json.Unmarshal(b, &data); err != nil {
		t.Fatal(err)
	}
	data["tenants"] = tenants
	b, _ = json.Marshal(data)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// idToken is an identity token as ext_authz mints it, attributes included.
func (s *signer) idToken(t *testing.T, tenant, sub string, roles []string, attrs map[string]any) string {
	t.Helper()
	tok, err := jwt.NewBuilder().Audience([]string{"kailash-runner"}).Subject(sub).Expiration(time.Now().Add(time.Hour)).
		Claim("tenant", tenant).Claim("roles", roles).Claim("attributes", attrs).Build()
	if err != nil {
		t.Fatal(err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, s.key))
	if err != nil {
		t.Fatal(err)
	}
	return string(signed)
}

// newPolicyServer is a runner verifying identity tokens, with the bundle
// as policy.bundle and the given shared workflows.
func newPolicyServer(t *testing.T, bundle string, r config.Runner, opts Options, wfs ...*workflow.Workflow) (*Server, *signer) {
	t.Helper()
	sg, jwks := newSigner(t, t.TempDir())
	r.HTTP, r.IdentityJWKS, r.IdentityAudience = "127.0.0.1:0", jwks, "kailash-runner"
	s, err := New(&config.Config{Runner: r, Policy: config.Policy{Bundle: bundle}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.ln.Close(); s.shutdown() })
	m := map[string]*workflow.Workflow{}
	for _, w := range wfs {
		m[w.Def.Name] = w
	}
	s.workflows.Store(&m)
	return s, sg
}

var (
	finance = map[string]any{"department": "finance", "clearance": "secret"}
	hr      = map[string]any{"department": "hr", "clearance": "confidential"}
)

// Bypass 2: the policy authorizes a create by parsed_body.name (a
// case-sensitive map, the last of duplicate keys); the runner must refuse
// every body it would read differently, not store another workflow.
func TestBodiesTheRunnerWouldReadOtherwiseAreRefused(t *testing.T) {
	bundle := labelledBundle(t, payrollLabels)
	s, sg := newPolicyServer(t, bundle, config.Runner{}, Options{}, mustCompile(t, workflow.Definition{Name: "hello", Nodes: []workflow.Node{{ID: "a", Type: "identity"}}}))
	mallory := apiClient{t, s.Handler(), map[string]string{wire.HeaderIdentity: sg.idToken(t, "acme", "mallory", []string{"data_scientist"}, finance)}}

	// What the shipped policy decides, given the body as ext_authz parses it.
	eng, err := policies.NewEngine(t.Context(), policies.EngineOptions{Dir: bundle, Decision: "kailash/authz/allow"})
	if err != nil {
		t.Fatal(err)
	}
	allows := func(body string) bool {
		var parsed any
		if err := util.UnmarshalJSON([]byte(body), &parsed); err != nil {
			t.Fatal(err)
		}
		v, err := ast.InterfaceToValue(map[string]any{
			"attributes":  map[string]any{"request": map[string]any{"http": map[string]any{"method": "POST", "path": "/v1/workflows"}}},
			"parsed_path": []any{"v1", "workflows"}, "parsed_body": parsed,
			"identity": map[string]any{"sub": "mallory", "tenant": "acme", "roles": []any{"data_scientist"}, "attributes": finance},
			"tenant":   map[string]any{"id": "acme"},
		})
		if err != nil {
			t.Fatal(err)
		}
		dec, err := eng.Eval(t.Context(), v)
		if err != nil {
			t.Fatal(err)
		}
		return dec == true
	}
	const nodes = `"nodes":[{"id":"a","type":"code","config":{"code":"result = 'attacker'"}}]`
	squat := `{"name":"decoy","NAME":"payroll",` + nodes + `}`
	if !allows(squat) || allows(`{"name":"payroll",`+nodes+`}`) {
		t.Fatal("the policy should allow creating decoy and deny creating payroll to finance")
	}
	for _, tc := range []struct{ body, key string }{
		{squat, `"NAME"`},
		{`{"name":"decoy","name":"payroll",` + nodes + `}`, `"name"`},
		{`{"Name":"payroll",` + nodes + `}`, `"Name"`},
		{`{"name":"etl","nodes":[{"id":"a","type":"identity","Config":{}}]}`, `"Config"`},
		{`{"name":"etl","nodes":[{"id":"a","type":"transform","config":{"set":{"k":1,"K":2}}}]}`, `"K"`},
		{`{"name":"etl","nodes":[{"id":"a","type":"identity"}],"extra":1}`, `"extra"`},
	} {
		code, body := mallory.do("POST", "/v1/workflows", tc.body)
		msg, _ := body["message"].(string)
		if code != http.StatusBadRequest || body["error"] != "bad_definition" || !strings.Contains(msg, tc.key) {
			t.Errorf("create %s: %d %v, want 400 naming %s", tc.body, code, body, tc.key)
		}
	}
	if code, body := mallory.do("GET", "/v1/workflows/payroll", ""); code != http.StatusNotFound {
		t.Fatalf("payroll was stored: %d %v", code, body)
	}
	// YAML too: keys differing only in case.
	if code, body := mallory.do("POST", "/v1/workflows", "name: etl\nnodes:\n  - id: a\n    type: transform\n    config: {set: {k: 1, K: 2}}\n"); code != http.StatusBadRequest || !strings.Contains(body["message"].(string), `"K"`) {
		t.Errorf("yaml case variants: %d %v", code, body)
	}
	// Execution input.
	for _, tc := range []struct{ body, key string }{
		{`{"amount":1,"AMOUNT":1000000}`, `"AMOUNT"`},
		{`{"order":{"id":1,"id":2}}`, `"id"`},
	} {
		code, body := mallory.do("POST", "/v1/workflows/hello/executions", tc.body)
		msg, _ := body["message"].(string)
		if code != http.StatusBadRequest || body["error"] != "bad_json" || !strings.Contains(msg, tc.key) {
			t.Errorf("execute %s: %d %v, want 400 naming %s", tc.body, code, body, tc.key)
		}
	}
	// Well-formed bodies still work.
	if code, body := mallory.do("POST", "/v1/workflows", `{"name":"etl","nodes":[{"id":"a","type":"identity","config":{}}]}`); code != http.StatusCreated {
		t.Fatalf("create etl: %d %v", code, body)
	}
	if code, body := mallory.do("POST", "/v1/workflows/hello/executions", `{"amount":1,"Order":{"id":1}}`); code != http.StatusOK {
		t.Fatalf("execute: %d %v", code, body)
	}
}

// countingPolicy counts the event decisions asked.
type countingPolicy struct {
	eng *policies.Engine
	n   atomic.Int64
}

func (c *countingPolicy) Eval(ctx context.Context, in ast.Value) (any, error) {
	c.n.Add(1)
	return c.eng.Eval(ctx, in)
}
func (c *countingPolicy) Revision() string { return c.eng.Revision() }

// eventReader returns the next event, nil when none comes within timeout.
type eventReader func(timeout time.Duration) map[string]any

func sseEvents(t *testing.T, url, token string) eventReader {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", url, nil)
	req.Header.Set(wire.HeaderIdentity, token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 {
		t.Fatalf("subscribe %s: %d", url, resp.StatusCode)
	}
	lines := make(chan string, 256)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	if l := <-lines; !strings.HasPrefix(l, ": subscribed") {
		t.Fatalf("first line %q", l)
	}
	return func(timeout time.Duration) map[string]any {
		t.Helper()
		deadline := time.After(timeout)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Error("the stream ended")
					return nil
				}
				if d, ok := strings.CutPrefix(l, "data: "); ok {
					var e map[string]any
					if err := json.Unmarshal([]byte(d), &e); err != nil {
						t.Fatal(err)
					}
					return e
				}
			case <-deadline:
				return nil
			}
		}
	}
}

func wsEvents(t *testing.T, url, token string) eventReader {
	t.Helper()
	conn, _, err := wsDial(t, strings.Replace(url, "http://", "ws://", 1), map[string]string{wire.HeaderIdentity: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	var hello map[string]any
	if err := readJSON(t, conn, &hello); err != nil || hello["type"] != "subscribed" {
		t.Fatalf("ws hello: %v %v", err, hello)
	}
	return func(timeout time.Duration) map[string]any {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		_, b, err := conn.Read(ctx)
		if err != nil {
			return nil
		}
		var e map[string]any
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatal(err)
		}
		return e
	}
}

// until reads events up to n of workflow wf's execution.completed and
// returns the "workflow:type" of each read.
func until(t *testing.T, next eventReader, wf string, n int) []string {
	t.Helper()
	var got []string
	for n > 0 {
		e := next(20 * time.Second)
		if e == nil {
			t.Fatalf("no event within 20s after %v", got)
		}
		got = append(got, e["workflow"].(string)+":"+e["type"].(string))
		if e["workflow"] == wf && e["type"] == "execution.completed" {
			n--
		}
	}
	return got
}

// Bypass 3: the tenant-wide streams show a labelled workflow's events only
// to callers its labels admit (the runner's own engine over policy.bundle).
func TestTenantEventStreamsApplyWorkflowLabels(t *testing.T) {
	bundle := labelledBundle(t, payrollLabels)
	payroll := mustCompile(t, workflow.Definition{Name: "payroll", Nodes: []workflow.Node{{ID: "pay", Type: "identity"}}})
	etl := mustCompile(t, workflow.Definition{Name: "etl", Nodes: []workflow.Node{{ID: "load", Type: "identity"}}})
	s, sg := newPolicyServer(t, bundle, config.Runner{}, Options{}, payroll, etl)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	fin := sg.idToken(t, "acme", "fred", []string{"data_scientist"}, finance)
	hrTok := sg.idToken(t, "acme", "hanna", []string{"business_user"}, hr)

	streams := map[string]eventReader{
		"finance sse":          sseEvents(t, srv.URL+"/v1/events", fin),
		"finance ws":           wsEvents(t, srv.URL+"/v1/events/ws", fin),
		"finance payroll sse":  sseEvents(t, srv.URL+"/v1/workflows/payroll/events", fin),
		"finance ws, no attrs": wsEvents(t, srv.URL+"/v1/events/ws", sg.idToken(t, "acme", "nobody", []string{"admin"}, nil)),
	}
	hrSSE, hrWS := sseEvents(t, srv.URL+"/v1/events", hrTok), wsEvents(t, srv.URL+"/v1/events/ws", hrTok)

	run := apiClient{t, s.Handler(), map[string]string{wire.HeaderIdentity: hrTok}}
	for _, wf := range []string{"payroll", "etl"} {
		if code, body := run.do("POST", "/v1/workflows/"+wf+"/executions", `{"salary":100}`); code != 200 {
			t.Fatalf("execute %s: %d %v", wf, code, body)
		}
	}
	for name, next := range streams {
		if name == "finance payroll sse" {
			continue
		}
		if got := strings.Join(until(t, next, "etl", 1), ","); got != "etl:execution.started,etl:node.finished,etl:execution.completed" {
			t.Errorf("%s: %s", name, got)
		}
	}
	want := "payroll:execution.started,payroll:node.finished,payroll:execution.completed,etl:execution.started,etl:node.finished,etl:execution.completed"
	for name, next := range map[string]eventReader{"hr sse": hrSSE, "hr ws": hrWS} {
		if got := strings.Join(until(t, next, "etl", 1), ","); got != want {
			t.Errorf("%s: %s", name, got)
		}
	}
	// The workflow's own stream (which ext_authz guards too) withholds them
	// as well.
	if e := streams["finance payroll sse"](500 * time.Millisecond); e != nil {
		t.Fatalf("finance saw a payroll event on payroll's stream: %v", e)
	}
}

// The decision is asked once per subscriber, workflow and policy revision,
// not per event; a new revision is asked again.
func TestEventDecisionCachedPerRevision(t *testing.T) {
	bundle := labelledBundle(t, payrollLabels)
	eng, err := policies.NewEngine(t.Context(), policies.EngineOptions{Dir: bundle, Decision: DefaultEventDecision})
	if err != nil {
		t.Fatal(err)
	}
	pol := &countingPolicy{eng: eng}
	payroll := mustCompile(t, workflow.Definition{Name: "payroll", Nodes: []workflow.Node{{ID: "pay", Type: "identity"}}})
	etl := mustCompile(t, workflow.Definition{Name: "etl", Nodes: []workflow.Node{{ID: "load", Type: "identity"}}})
	s, sg := newPolicyServer(t, bundle, config.Runner{}, Options{EventPolicy: pol}, payroll, etl)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	fin := wsEvents(t, srv.URL+"/v1/events/ws", sg.idToken(t, "acme", "fred", []string{"data_scientist"}, finance))
	run := apiClient{t, s.Handler(), map[string]string{wire.HeaderIdentity: sg.idToken(t, "acme", "hanna", []string{"admin"}, hr)}}
	exec := func(wf string) {
		if code, body := run.do("POST", "/v1/workflows/"+wf+"/executions", `{}`); code != 200 {
			t.Fatalf("execute %s: %d %v", wf, code, body)
		}
	}
	for range 3 {
		exec("payroll")
	}
	for range 3 {
		exec("etl")
	}
	for _, ev := range until(t, fin, "etl", 3) {
		if strings.HasPrefix(ev, "payroll:") {
			t.Fatalf("finance saw %s", ev)
		}
	}
	if n := pol.n.Load(); n != 2 {
		t.Fatalf("%d decisions for 18 events of 2 workflows, want 2", n)
	}
	// The label goes: a new revision, decided afresh.
	rev := eng.Revision()
	setTenants(t, bundle, map[string]any{})
	if err := eng.Reload(t.Context()); err != nil || eng.Revision() == rev {
		t.Fatalf("reload: %v (revision %s)", err, eng.Revision())
	}
	exec("payroll")
	if got := strings.Join(until(t, fin, "payroll", 1), ","); got != "payroll:execution.started,payroll:node.finished,payroll:execution.completed" {
		t.Fatalf("after the label went: %s", got)
	}
	if n := pol.n.Load(); n != 3 {
		t.Fatalf("%d decisions after a new revision, want 3", n)
	}
}

// A failing decision withholds the events (fail closed).
func TestEventDecisionFailsClosed(t *testing.T) {
	etl := mustCompile(t, workflow.Definition{Name: "etl", Nodes: []workflow.Node{{ID: "load", Type: "identity"}}})
	var calls atomic.Int64
	s, sg := newPolicyServer(t, "", config.Runner{}, Options{EventPolicy: policyFunc(func(context.Context, ast.Value) (any, error) {
		if calls.Add(1) == 1 {
			return nil, policies.ErrUndefined
		}
		return "yes", nil // neither a boolean nor {"allowed": ...}
	})}, etl)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	conn, _, err := wsDial(t, srv.URL+"/v1/events/ws", map[string]string{wire.HeaderIdentity: sg.idToken(t, "acme", "fred", []string{"admin"}, finance)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	var hello map[string]any
	_ = readJSON(t, conn, &hello)
	run := apiClient{t, s.Handler(), map[string]string{wire.HeaderIdentity: sg.idToken(t, "acme", "hanna", []string{"admin"}, hr)}}
	run.do("POST", "/v1/workflows/etl/executions", `{}`)
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if _, b, err := conn.Read(ctx); err == nil {
		t.Fatalf("an event passed a failed decision: %s", b)
	}
}

// Bypass 4: an execution is reached only through its own workflow's path,
// and only its starter (or a caller granted workflow:cancel_any) cancels it.
func TestCancelChecksWorkflowAndStarter(t *testing.T) {
	bundle := labelledBundle(t, payrollLabels)
	host := hang(t)
	slow := mustCompile(t, workflow.Definition{Name: "payroll", Nodes: []workflow.Node{httpNode("wait", host, "/")}})
	etl := mustCompile(t, workflow.Definition{Name: "etl", Nodes: []workflow.Node{{ID: "load", Type: "identity"}}})
	s, sg := newPolicyServer(t, bundle, config.Runner{HTTPAllow: []string{host}}, Options{}, slow, etl)
	as := func(user string, roles []string, attrs map[string]any) apiClient {
		return apiClient{t, s.Handler(), map[string]string{wire.HeaderIdentity: sg.idToken(t, "acme", user, roles, attrs)}}
	}
	hanna := as("hanna", []string{"business_user"}, hr)
	mallory := as("mallory", []string{"data_scientist"}, finance)
	boss := as("boss", []string{"admin"}, hr)
	globex := apiClient{t, s.Handler(), map[string]string{wire.HeaderIdentity: sg.idToken(t, "globex", "gina", []string{"admin"}, hr)}}

	start := func() string {
		code, body := hanna.do("POST", "/v1/workflows/payroll/executions?async=true", `{}`)
		if code != 202 {
			t.Fatalf("start: %d %v", code, body)
		}
		return body["execution_id"].(string)
	}
	status := func(id string) any {
		_, body := hanna.do("GET", "/v1/workflows/payroll/executions/"+id, "")
		return body["status"]
	}
	id := start()
	for _, tc := range []struct {
		who  apiClient
		path string
		want int
	}{
		{mallory, "/v1/workflows/etl/executions/" + id + "/cancel", 404},    // another workflow's path
		{mallory, "/v1/workflows/nosuch/executions/" + id + "/cancel", 404}, // one that does not exist
		{boss, "/v1/workflows/etl/executions/" + id + "/cancel", 404},       // even for an admin
		{globex, "/v1/workflows/payroll/executions/" + id + "/cancel", 404}, // another tenant
		{mallory, "/v1/workflows/payroll/executions/" + id + "/cancel", 403},
	} {
		code, body := tc.who.do("POST", tc.path, "")
		if code != tc.want {
			t.Errorf("POST %s: %d %v, want %d", tc.path, code, body, tc.want)
		}
	}
	for _, p := range []string{"/v1/workflows/etl/executions/" + id, "/v1/workflows/nosuch/executions/" + id} {
		if code, body := mallory.do("GET", p, ""); code != 404 {
			t.Errorf("GET %s: %d %v", p, code, body)
		}
	}
	if st := status(id); st != store.StatusRunning {
		t.Fatalf("after refused cancels the execution is %v", st)
	}
	// The starter cancels her own run; an admin (workflow:cancel_any) anyone's.
	for _, who := range []apiClient{hanna, boss} {
		if who.hdr[wire.HeaderIdentity] == boss.hdr[wire.HeaderIdentity] {
			id = start()
		}
		if code, body := who.do("POST", "/v1/workflows/payroll/executions/"+id+"/cancel", ""); code != 202 {
			t.Fatalf("cancel: %d %v", code, body)
		}
		testenv.Eventually(t, 10*time.Second, func() error {
			if st := status(id); st != store.StatusCancelled {
				return errorf("status %v", st)
			}
			return nil
		})
	}
	// A finished run: 409 on its own path, 404 on another's.
	if code, _ := hanna.do("POST", "/v1/workflows/payroll/executions/"+id+"/cancel", ""); code != 409 {
		t.Errorf("finished, own path: %d", code)
	}
	if code, _ := hanna.do("POST", "/v1/workflows/etl/executions/"+id+"/cancel", ""); code != 404 {
		t.Errorf("finished, other path: %d", code)
	}
}
