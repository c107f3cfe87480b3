package main

// End-to-end through Envoy: issue 16's bypasses 2–4 on a tenant whose
// bundle data labels its payroll workflows (department hr, confidential).

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// hardeningBundle is the shipped bundle with acme's payroll workflows labelled.
func hardeningBundle(t *testing.T) string {
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
		if rel == filepath.Join("kailash", "config", "data.json") {
			var data map[string]any
			if err := json.Unmarshal(b, &data); err != nil {
				return err
			}
			label := map[string]any{"department": "hr", "classification": "confidential"}
			data["tenants"] = map[string]any{"acme": map[string]any{"workflows": map[string]any{"payroll": label, "payroll_slow": label}}}
			b, _ = json.Marshal(data)
		}
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(rel)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRunnerHardeningEndToEnd(t *testing.T) {
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	t.Cleanup(hang.Close)
	hangHost := strings.TrimPrefix(hang.URL, "http://")
	bundle := hardeningBundle(t)
	s := startStackConfig(t, func(p ports) string {
		c := configYAML(t, p, "acme")
		c = strings.Replace(c, "identity_audience: kailash-runner}", `identity_audience: kailash-runner, http_allow: ["`+hangHost+`"]}`, 1)
		return c + "policy: {bundle: " + bundle + "}\n"
	})
	hanna := s.token(devtoken.Claims{Tenant: "acme", Subject: "hanna", Roles: []string{"data_scientist"},
		Extra: map[string]any{"department": "hr", "clearance": "confidential"}})
	mallory := s.token(devtoken.Claims{Tenant: "acme", Subject: "mallory", Roles: []string{"data_scientist"},
		Extra: map[string]any{"department": "finance", "clearance": "secret"}})
	const host = "acme.localhost"

	// Bypass 2: the policy reads parsed_body.name ("decoy"); the runner
	// must not store "payroll".
	const nodes = `"nodes":[{"id":"a","type":"code","config":{"code":"result = 'attacker'"}}]`
	if r := s.request("POST", host, "/v1/workflows", mallory, `{"name":"payroll",`+nodes+`}`); r.code != 403 {
		t.Fatalf("finance creates payroll: %d %s", r.code, r.body)
	}
	r := s.request("POST", host, "/v1/workflows", mallory, `{"name":"decoy","NAME":"payroll",`+nodes+`}`)
	if r.code != 400 || !strings.Contains(r.body, `\"NAME\"`) && !strings.Contains(r.body, `"NAME"`) {
		t.Fatalf("case-variant create: %d %s, want 400 naming NAME", r.code, r.body)
	}
	if r := s.request("GET", host, "/v1/workflows/payroll", hanna, ""); r.code != 404 {
		t.Fatalf("payroll exists after the squat: %d %s", r.code, r.body)
	}
	for _, def := range []string{
		`{"name":"payroll","nodes":[{"id":"pay","type":"identity"}]}`,
		`{"name":"payroll_slow","nodes":[{"id":"wait","type":"http","config":{"url":"` + hang.URL + `/"}}]}`,
	} {
		if r := s.request("POST", host, "/v1/workflows", hanna, def); r.code != 201 {
			t.Fatalf("hr creates %s: %d %s", def, r.code, r.body)
		}
	}

	// Bypass 3: finance's tenant-wide stream shows hello's events, not payroll's.
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	conn, _, err := s.dialEvents(ctx, host, "/v1/events/ws", mallory)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if _, b, err := conn.Read(ctx); err != nil || !strings.Contains(string(b), "subscribed") {
		t.Fatalf("subscribe: %v %s", err, b)
	}
	for _, wf := range []string{"payroll", "hello"} {
		if r := s.request("POST", host, "/v1/workflows/"+wf+"/executions", hanna, `{"salary":1}`); r.code != 200 {
			t.Fatalf("execute %s: %d %s", wf, r.code, r.body)
		}
	}
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("reading events: %v", err)
		}
		var e map[string]any
		_ = json.Unmarshal(b, &e)
		if e["workflow"] != "hello" {
			t.Fatalf("finance saw %s", b)
		}
		if e["type"] == "execution.completed" {
			break
		}
	}

	// Bypass 4: a labelled run cannot be cancelled through an unlabelled
	// workflow's path (which ext_authz admits), nor by a non-starter.
	r = s.request("POST", host, "/v1/workflows/payroll_slow/executions?async=true", hanna, `{}`)
	if r.code != 202 {
		t.Fatalf("start: %d %s", r.code, r.body)
	}
	id, _ := r.json(t)["execution_id"].(string)
	if r := s.request("POST", host, "/v1/workflows/hello/executions/"+id+"/cancel", mallory, ""); r.code != 404 {
		t.Fatalf("cancel through hello's path: %d %s, want 404", r.code, r.body)
	}
	if r := s.request("GET", host, "/v1/workflows/payroll_slow/executions/"+id, hanna, ""); r.code != 200 || r.json(t)["status"] != "running" {
		t.Fatalf("after the refused cancel: %d %s", r.code, r.body)
	}
	if r := s.request("POST", host, "/v1/workflows/payroll_slow/executions/"+id+"/cancel", hanna, ""); r.code != 202 {
		t.Fatalf("the starter cancels: %d %s", r.code, r.body)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if r := s.request("GET", host, "/v1/workflows/payroll_slow/executions/"+id, hanna, ""); r.json(t)["status"] != "cancelled" {
			return fmt.Errorf("status: %s", r.body)
		}
		return nil
	})
}
