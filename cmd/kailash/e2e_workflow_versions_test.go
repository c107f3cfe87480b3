package main

// End-to-end: a workflow replaced through Envoy (PUT, If-Match) serves its
// new version at once; executions record the version they ran; the policy
// admits PUT for whoever may create workflows.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/kailash-gw/kailash/internal/devtoken"
)

// requestH is s.request with extra headers.
func (s *stack) requestH(method, host, path, token, body string, hdr map[string]string) reply {
	s.t.Helper()
	req, _ := http.NewRequest(method, "http://"+s.ports.envoy+path, strings.NewReader(body))
	req.Host = host
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(b)}
}

func scoreWorkflow(factor int) string {
	return fmt.Sprintf(`{"name": "scored", "nodes": [
  {"id": "score", "type": "code", "config": {"code": "result = {'score': %d * len(parameters.get('items', []))}"}}
]}`, factor)
}

func TestWorkflowUpdateThroughEnvoy(t *testing.T) {
	s := startStack(t, "acme")
	dana := s.token(devtoken.Claims{Tenant: "acme", Subject: "dana", Roles: []string{"data_scientist"}})
	bob := s.token(devtoken.Claims{Tenant: "acme", Subject: "bob", Roles: []string{"business_user"}})
	execute := func() (id string, score any) {
		t.Helper()
		r := s.request("POST", "acme.localhost", "/v1/workflows/scored/executions", dana, `{"items": [1, 2, 3]}`)
		var m struct {
			ID     string         `json:"execution_id"`
			Output map[string]any `json:"output"`
		}
		if err := json.Unmarshal([]byte(r.body), &m); r.code != 200 || err != nil {
			t.Fatalf("execute: %d %s", r.code, r.body)
		}
		res, _ := m.Output["result"].(map[string]any)
		return m.ID, res["score"]
	}
	version := func(id string) any {
		t.Helper()
		r := s.request("GET", "acme.localhost", "/v1/workflows/scored/executions/"+id, dana, "")
		var m map[string]any
		if err := json.Unmarshal([]byte(r.body), &m); r.code != 200 || err != nil {
			t.Fatalf("execution %s: %d %s", id, r.code, r.body)
		}
		return m["workflow_version"]
	}

	if r := s.request("POST", "acme.localhost", "/v1/workflows", dana, scoreWorkflow(1)); r.code != 201 {
		t.Fatalf("create: %d %s", r.code, r.body)
	}
	r := s.request("GET", "acme.localhost", "/v1/workflows/scored", dana, "")
	if r.code != 200 || r.header.Get("ETag") != `"1"` {
		t.Fatalf("GET: %d ETag %q %s", r.code, r.header.Get("ETag"), r.body)
	}
	id1, score := execute()
	if score != float64(3) {
		t.Fatalf("version 1 scored %v, want 3", score)
	}

	// A caller without workflow:create may not replace it (the policy).
	if r := s.requestH("PUT", "acme.localhost", "/v1/workflows/scored", bob, scoreWorkflow(100), nil); r.code != http.StatusForbidden {
		t.Fatalf("PUT by a business_user: %d %s; want 403", r.code, r.body)
	}
	r = s.requestH("PUT", "acme.localhost", "/v1/workflows/scored", dana, scoreWorkflow(10), map[string]string{"If-Match": `"1"`})
	if r.code != 200 || r.header.Get("ETag") != `"2"` {
		t.Fatalf("PUT If-Match \"1\" through Envoy: %d ETag %q %s", r.code, r.header.Get("ETag"), r.body)
	}
	// The next execution runs version 2.
	id2, score := execute()
	if score != float64(30) {
		t.Fatalf("after the PUT the workflow scored %v, want version 2's 30", score)
	}
	// A stale If-Match, and a definition that does not parse, change
	// nothing.
	if r := s.requestH("PUT", "acme.localhost", "/v1/workflows/scored", dana, scoreWorkflow(1000), map[string]string{"If-Match": `"1"`}); r.code != http.StatusPreconditionFailed || r.header.Get("ETag") != `"2"` {
		t.Fatalf("PUT with a stale If-Match: %d ETag %q %s; want 412", r.code, r.header.Get("ETag"), r.body)
	}
	bad := strings.Replace(scoreWorkflow(1000), `"nodes"`, `"nodez"`, 1)
	if r := s.requestH("PUT", "acme.localhost", "/v1/workflows/scored", dana, bad, nil); r.code != http.StatusBadRequest || !strings.Contains(r.body, "nodez") {
		t.Fatalf("PUT of an unknown field: %d %s; want 400 naming it", r.code, r.body)
	}
	if _, score := execute(); score != float64(30) {
		t.Fatalf("after the refused PUTs the workflow scored %v, want version 2's 30", score)
	}
	if r := s.request("GET", "acme.localhost", "/v1/workflows/scored?version=1", dana, ""); r.code != 200 || !strings.Contains(r.body, "1 * len") {
		t.Fatalf("GET ?version=1: %d %s", r.code, r.body)
	}
	if v := version(id1); v != float64(1) {
		t.Errorf("the first execution recorded version %v, want 1", v)
	}
	if v := version(id2); v != float64(2) {
		t.Errorf("the execution after the PUT recorded version %v, want 2", v)
	}
}
