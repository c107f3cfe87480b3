package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// TestRoleLimitsFromPolicyData: the bundle's roles.<role>.limits.executions_per_hour
// is enforced through a real Envoy by the rate-limit service — the policy
// hands the caller's limit over in its dynamic metadata, Envoy sends it as
// the descriptor's limit override — counting execution starts only, per
// user; kailash explain names the quota.
func TestRoleLimitsFromPolicyData(t *testing.T) {
	bundle := bundleWithData(t, func(data map[string]any) {
		data["roles"].(map[string]any)["business_user"].(map[string]any)["limits"] = map[string]any{"executions_per_hour": 2}
	})
	p := freePorts(t)
	body := configYAML(t, p, "acme")
	body = strings.Replace(body, "\ntenants:\n", fmt.Sprintf("\nratelimit: {grpc: %s, fail_mode: closed, timeout: 2s}\npolicy: {bundle: %s}\ntenants:\n", testenv.FreeAddr(t), bundle), 1)
	body = strings.Replace(body, "    plan: enterprise\n", "    plan: enterprise\n    limits: {max_api_calls_per_day: 1000}\n", 1)
	s := startStackWith(t, stackOptions{ports: p, body: body})
	bob := s.token(devtoken.Claims{Tenant: "acme", Subject: "bob", Roles: []string{"business_user"}})
	carol := s.token(devtoken.Claims{Tenant: "acme", Subject: "carol", Roles: []string{"business_user"}})

	for i := range 2 {
		if r := s.mustDo("acme.localhost", bob, nil); r.code != 200 {
			t.Fatalf("bob's execution %d: %d %s", i+1, r.code, r.body)
		}
	}
	r := s.mustDo("acme.localhost", bob, nil)
	if r.code != 429 {
		t.Fatalf("bob's third execution in the hour: %d, want 429", r.code)
	}
	if got := s.request("GET", "acme.localhost", "/v1/workflows", bob, ""); got.code != 200 {
		t.Errorf("a read after the limit: %d, want 200 (only execution starts count)", got.code)
	}
	if got := s.mustDo("acme.localhost", carol, nil); got.code != 200 {
		t.Errorf("carol's first execution: %d, want 200 (counted per user)", got.code)
	}
	rec := explainOfID(t, p, r.header.Get("X-Request-Id"))
	if len(rec.RateLimit) != 1 || rec.RateLimit[0].Quota != "acme/role_hour" || rec.RateLimit[0].Limit != 2 || rec.RateLimit[0].Window != "hour" {
		t.Errorf("explain rate-limit step %+v (edge %+v)", rec.RateLimit, rec.Edge)
	}
}

// bundleWithData is a copy of the shipped bundle whose data.json edit
// changed.
func bundleWithData(t *testing.T, edit func(data map[string]any)) string {
	t.Helper()
	bundle := filepath.Join(t.TempDir(), "bundle")
	if err := os.CopyFS(bundle, os.DirFS("../../policies/bundle")); err != nil {
		t.Fatal(err)
	}
	dataPath := filepath.Join(bundle, "kailash", "config", "data.json")
	raw, err := os.ReadFile(dataPath)
	if err != nil {
		t.Fatal(err)
	}
	var data map[string]any
	if err := json.Unmarshal(raw, &data); err != nil {
		t.Fatal(err)
	}
	edit(data)
	if raw, err = json.Marshal(data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dataPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return bundle
}
