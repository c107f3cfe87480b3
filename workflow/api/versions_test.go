package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// doH is c.do with extra request headers, returning the response's
// headers too.
func (c apiClient) doH(method, path, body string, hdr map[string]string) (int, map[string]any, http.Header) {
	c.t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for k, v := range c.hdr {
		req.Header.Set(k, v)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	c.h.ServeHTTP(rec, req)
	var m map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &m)
	return rec.Code, m, rec.Header()
}

// versionedWorkflow is workflow "w" whose code node answers {"v": v}.
func versionedWorkflow(v int) string {
	return fmt.Sprintf(`{"name":"w","nodes":[{"id":"script","type":"code","config":{"code":"result = {\"v\": %d}"}}]}`, v)
}

// Workflow versions on each store: create is version 1, PUT writes 2, a
// PUT whose If-Match names an older version is 412 (and changes nothing),
// a refused definition is 400/422 naming the field while the current
// version keeps serving, ?version=1 reads the old definition, and each
// execution records the version it ran — also read back after a restart
// on the durable stores.
func TestWorkflowVersions(t *testing.T) {
	for _, b := range []struct {
		name string
		cfg  func(t *testing.T) config.Runner
	}{
		{"memory", func(*testing.T) config.Runner { return config.Runner{} }},
		{"sqlite", func(t *testing.T) config.Runner { return config.Runner{DataDir: t.TempDir()} }},
		{"postgres", func(t *testing.T) config.Runner { return config.Runner{PostgresDSN: testenv.StartPostgres(t).DSN} }},
	} {
		t.Run(b.name, func(t *testing.T) { testWorkflowVersions(t, b.cfg(t)) })
	}
}

func testWorkflowVersions(t *testing.T, r config.Runner) {
	s1, err := New(&config.Config{Runner: withHTTP(r)}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			s1.ln.Close()
			s1.shutdown()
		}
	}
	t.Cleanup(stop)
	c := client(t, s1)
	run := func() (id string, v any) {
		t.Helper()
		code, body := c.do("POST", "/v1/workflows/w/executions", `{}`)
		if code != 200 {
			t.Fatalf("execute: %d %v", code, body)
		}
		out, _ := body["output"].(map[string]any)
		res, _ := out["result"].(map[string]any)
		return body["execution_id"].(string), res["v"]
	}
	recorded := func(id string) any {
		t.Helper()
		code, body := c.do("GET", "/v1/workflows/w/executions/"+id, "")
		if code != 200 {
			t.Fatalf("execution %s: %d %v", id, code, body)
		}
		return body["workflow_version"]
	}

	if code, body := c.do("POST", "/v1/workflows", versionedWorkflow(1)); code != 201 {
		t.Fatalf("create: %d %v", code, body)
	}
	code, body, h := c.doH("GET", "/v1/workflows/w", "", nil)
	if code != 200 || body["version"] != float64(1) || h.Get("ETag") != `"1"` {
		t.Fatalf("after create: %d %v ETag %q; want version 1, ETag \"1\"", code, body, h.Get("ETag"))
	}
	id1, out := run()
	if out != float64(1) {
		t.Fatalf("version 1 answered %v", out)
	}

	code, body, h = c.doH("PUT", "/v1/workflows/w", versionedWorkflow(2), map[string]string{"If-Match": `"1"`})
	if code != 200 || body["version"] != float64(2) || h.Get("ETag") != `"2"` {
		t.Fatalf("PUT If-Match \"1\": %d %v ETag %q; want 200, version 2", code, body, h.Get("ETag"))
	}
	// If-Match naming the version replaced: 412 with the current ETag, and
	// the definition stays version 2's.
	code, body, h = c.doH("PUT", "/v1/workflows/w", versionedWorkflow(3), map[string]string{"If-Match": `"1"`})
	if code != http.StatusPreconditionFailed || body["error"] != "version_mismatch" || body["version"] != float64(2) || h.Get("ETag") != `"2"` {
		t.Fatalf("PUT with a stale If-Match: %d %v ETag %q; want 412 at version 2", code, body, h.Get("ETag"))
	}
	// A definition that does not parse (an unknown field) and one that
	// does not compile (a bad resume mode): refused, naming the field.
	bad := strings.Replace(versionedWorkflow(3), `"nodes"`, `"nodez"`, 1)
	if code, body := c.do("PUT", "/v1/workflows/w", bad); code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(body["message"]), "nodez") {
		t.Fatalf("PUT of an unknown field: %d %v; want 400 naming nodez", code, body)
	}
	bad = strings.Replace(versionedWorkflow(3), `"nodes"`, `"resume":"sometimes","nodes"`, 1)
	if code, body := c.do("PUT", "/v1/workflows/w", bad); code != http.StatusUnprocessableEntity || !strings.Contains(fmt.Sprint(body["message"]), "resume") {
		t.Fatalf("PUT of a bad resume mode: %d %v; want 422 naming resume", code, body)
	}
	renamed := strings.Replace(versionedWorkflow(3), `"name":"w"`, `"name":"other"`, 1)
	if code, body := c.do("PUT", "/v1/workflows/w", renamed); code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(body["message"]), "name") {
		t.Fatalf("PUT renaming the workflow: %d %v; want 400 naming name", code, body)
	}
	if code, body := c.do("PUT", "/v1/workflows/nope", strings.Replace(versionedWorkflow(1), `"name":"w"`, `"name":"nope"`, 1)); code != http.StatusNotFound {
		t.Fatalf("PUT of a workflow that does not exist: %d %v; want 404", code, body)
	}
	// None of the refusals changed anything: version 2 serves.
	code, body, h = c.doH("GET", "/v1/workflows/w", "", nil)
	if code != 200 || body["version"] != float64(2) || h.Get("ETag") != `"2"` || body["updated_by"] != "alice" {
		t.Fatalf("after the refused PUTs: %d %v ETag %q; want version 2", code, body, h.Get("ETag"))
	}
	id2, out := run()
	if out != float64(2) {
		t.Fatalf("after the PUT the workflow answered %v, want version 2's", out)
	}

	code, body, h = c.doH("GET", "/v1/workflows/w?version=1", "", nil)
	def, _ := body["definition"].(map[string]any)
	if code != 200 || body["version"] != float64(1) || h.Get("ETag") != `"1"` || !strings.Contains(fmt.Sprint(def["nodes"]), `"v": 1`) {
		t.Fatalf("GET ?version=1: %d %v; want version 1's definition", code, body)
	}
	if code, body := c.do("GET", "/v1/workflows/w?version=9", ""); code != http.StatusNotFound {
		t.Fatalf("GET ?version=9: %d %v; want 404", code, body)
	}
	if code, _ := c.do("GET", "/v1/workflows/w?version=x", ""); code != http.StatusBadRequest {
		t.Fatalf("GET ?version=x: %d; want 400", code)
	}
	// An unconditional PUT (no If-Match) writes the next version.
	if code, body := c.do("PUT", "/v1/workflows/w", versionedWorkflow(3)); code != 200 || body["version"] != float64(3) {
		t.Fatalf("unconditional PUT: %d %v; want version 3", code, body)
	}
	// If-Match forms: a weak tag matches no version (strong comparison,
	// RFC 9110 §13.1.1); a list matches any of its versions; * any.
	for _, c2 := range []struct {
		ifMatch string
		code    int
		version float64
	}{
		{`W/"3"`, http.StatusPreconditionFailed, 3},
		{`"1", "3"`, http.StatusOK, 4},
		{`"1", "2"`, http.StatusPreconditionFailed, 4},
		{`*`, http.StatusOK, 5},
	} {
		code, body, _ := c.doH("PUT", "/v1/workflows/w", versionedWorkflow(int(c2.version)), map[string]string{"If-Match": c2.ifMatch})
		if code != c2.code || body["version"] != c2.version {
			t.Fatalf("PUT If-Match %s: %d %v; want %d at version %v", c2.ifMatch, code, body, c2.code, c2.version)
		}
	}
	if v := recorded(id1); v != float64(1) {
		t.Errorf("the execution before the PUT recorded version %v, want 1", v)
	}
	if v := recorded(id2); v != float64(2) {
		t.Errorf("the execution after the PUT recorded version %v, want 2", v)
	}
	code, body = c.do("GET", "/v1/workflows/w/executions", "")
	if list, _ := body["executions"].([]any); code != 200 || len(list) != 2 || fmt.Sprint(list[0].(map[string]any)["workflow_version"]) != "2" {
		t.Errorf("the execution list does not carry the versions: %d %v", code, body)
	}

	if r.DataDir == "" && r.PostgresDSN == "" {
		return
	}
	// The versions are durable: a restarted runner reads them.
	stop()
	c2 := client(t, newTestServerCfg(t, nil, r))
	if code, body := c2.do("GET", "/v1/workflows/w?version=2", ""); code != 200 || body["version"] != float64(2) {
		t.Fatalf("version 2 after a restart: %d %v", code, body)
	}
	if _, body := c2.do("GET", "/v1/workflows/w/executions/"+id1, ""); body["workflow_version"] != float64(1) {
		t.Fatalf("the execution's version after a restart: %v", body)
	}
}

func withHTTP(r config.Runner) config.Runner {
	r.HTTP = config.MustHostPort("127.0.0.1:0")
	return r
}
