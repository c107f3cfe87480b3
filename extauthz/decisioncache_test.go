package extauthz

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/policies"
)

// Drop-in mode caches a policy that allows it: the same request twice is a
// miss then a hit (counted), a request differing only where the policy does
// not read (a header) is a hit, one differing where it reads is a miss;
// every Check still writes its decision log event, with its own decision
// id, the cached one marked cached.
func TestDecisionCacheDropIn(t *testing.T) {
	var out bytes.Buffer
	cfg := dropInConfig(t, policyDir(t, envoyPolicy))
	cfg.Policy.DecisionLogs = config.DecisionLogs{Console: true}
	r := startDropIn(t, cfg, &out)
	if plan := r.srv.Engine().CachePlan(); !strings.HasPrefix(plan, "on, key: ") || strings.Contains(plan, "user-agent") {
		t.Fatalf("plan %q", plan)
	}
	buyer := "Bearer " + unsignedJWT(`{"role":"buyer"}`)
	send := func(method, ua string) {
		t.Helper()
		req := dropInReq(method, "/orders", buyer, "application/json", `{"qty": 3}`)
		req.Attributes.Request.Http.Headers["user-agent"] = ua
		resp, err := r.client.Check(t.Context(), req)
		if err != nil || resp.GetStatus().GetCode() != 0 {
			t.Fatalf("%s: %v %v", method, resp, err)
		}
	}
	send("POST", "curl")
	send("POST", "curl")
	send("POST", "go") // user-agent: not read by the policy
	send("GET", "go")
	if h, m := testutil.ToFloat64(r.srv.cacheHits), testutil.ToFloat64(r.srv.cacheMisses); h != 2 || m != 2 {
		t.Fatalf("hits %v misses %v, want 2 and 2", h, m)
	}
	r.stop()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d decision log events, want 4:\n%s", len(lines), out.String())
	}
	ids := map[string]bool{}
	for i, l := range lines {
		var ev struct {
			ID     string `json:"decision_id"`
			Result any    `json:"result"`
			Cached bool   `json:"cached"`
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatal(err)
		}
		ids[ev.ID] = true
		if want := i == 1 || i == 2; ev.Cached != want || ev.Result != true {
			t.Errorf("event %d: cached %v result %v", i, ev.Cached, ev.Result)
		}
	}
	if len(ids) != 4 {
		t.Errorf("%d distinct decision ids in 4 events", len(ids))
	}
}

// A policy the analysis cannot bound is evaluated every time, and the
// bypass is counted with its reason; policy.decision_cache.disabled turns
// the cache off (counted as disabled).
func TestDecisionCacheBypass(t *testing.T) {
	cfg := dropInConfig(t, policyDir(t, "package envoy.authz\nallow if time.now_ns() > 0\n"))
	r := startDropIn(t, cfg, nil)
	for range 2 {
		if _, err := r.client.Check(t.Context(), dropInReq("GET", "/", "", "", "")); err != nil {
			t.Fatal(err)
		}
	}
	if n := testutil.ToFloat64(r.srv.cacheBypass.WithLabelValues(policies.BypassNondeterministic + "time.now_ns")); n != 2 {
		t.Errorf("bypasses %v, want 2", n)
	}
	if h := testutil.ToFloat64(r.srv.cacheHits); h != 0 {
		t.Errorf("hits %v", h)
	}

	off := dropInConfig(t, policyDir(t, envoyPolicy))
	off.Policy.DecisionCache.Disabled = true
	r2 := startDropIn(t, off, nil)
	for range 2 {
		if _, err := r2.client.Check(t.Context(), dropInReq("GET", "/", "", "", "")); err != nil {
			t.Fatal(err)
		}
	}
	if n := testutil.ToFloat64(r2.srv.cacheBypass.WithLabelValues(policies.BypassDisabled)); n != 2 || r2.srv.Engine().CachePlan() != "off" {
		t.Errorf("disabled: bypasses %v, plan %q", n, r2.srv.Engine().CachePlan())
	}
}
