package explain

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
)

func TestStoreBoundedAndIndexed(t *testing.T) {
	s := NewStore(3)
	for i := range 5 {
		s.Update(fmt.Sprintf("d%d", i), "", func(r *Record) { r.Reason = fmt.Sprint(i) })
	}
	if s.Len() != 3 {
		t.Fatalf("len %d, want 3", s.Len())
	}
	if _, ok := s.Get("d1"); ok {
		t.Error("d1 kept beyond the bound")
	}
	// A later update by request id finds the record made by decision id
	// once both are known, and fills the other id.
	s.Update("d4", "r4", func(r *Record) { r.Status = 429 })
	s.Update("", "r4", func(r *Record) { r.Edge = &EdgeStep{Check: "rate_limit"} })
	r, ok := s.Get("d4")
	if !ok || r.RequestID != "r4" || r.Status != 429 || r.Edge == nil || r.Reason != "4" {
		t.Fatalf("merged record %+v", r)
	}
	r.Edge.Check = "changed"
	if again, _ := s.Get("r4"); again.Edge.Check != "rate_limit" {
		t.Error("Get handed out the stored record, not a copy")
	}
	s.Update("", "", func(*Record) { t.Error("an update without ids made a record") })
	var off *Store = NewStore(0)
	off.Update("d", "r", func(*Record) { t.Error("a store of 0 records kept one") })
	if _, ok := off.Get("d"); ok || off.Enabled() {
		t.Error("store of 0 records")
	}
}

func TestEdgeChecks(t *testing.T) {
	for _, tc := range []struct {
		in    EdgeInput
		check string
	}{
		{EdgeInput{Status: 403, Details: "rbac_access_denied_matched_policy[none]", Tenant: "walled", ClientIP: "10.1.2.3"}, "ip_allowlist"},
		{EdgeInput{Status: 404, Details: "route_not_found", Flags: "NR", Host: "nobody.example"}, "unknown_host"},
		{EdgeInput{Status: 403, Details: "direct_response", Tenant: "dormant", Inactive: true}, "inactive_tenant"},
		{EdgeInput{Status: 429, Details: "request_rate_limited", Flags: "RL"}, "rate_limit"},
		{EdgeInput{Status: 429, Details: "local_rate_limited", Flags: "RL"}, "local_rate_limit"},
		{EdgeInput{Status: 503, Details: "rate_limiter_error", Flags: "RLSE"}, "rate_limit_unavailable"},
		{EdgeInput{Status: 403, Details: "ext_authz_denied", Flags: "UAEX"}, "authz"},
		{EdgeInput{Status: 503, Details: "ext_authz_error", Flags: "UAEX"}, "authz_unavailable"},
		{EdgeInput{Status: 500, Details: "via_upstream"}, "upstream"},
		{EdgeInput{Status: 503, Details: "upstream_reset_before_response_started{connection_failure}", Flags: "UF"}, "upstream"},
		{EdgeInput{Status: 400, Details: "something_new"}, ""},
	} {
		if e := Edge(tc.in); e.Check != tc.check || (tc.check != "" && e.Meaning == "") {
			t.Errorf("%+v: check %q (%q), want %q", tc.in, e.Check, e.Meaning, tc.check)
		}
	}
	if m := Edge(EdgeInput{Details: "rbac_access_denied_matched_policy[none]", Tenant: "walled", ClientIP: "10.1.2.3"}).Meaning; !strings.Contains(m, "10.1.2.3") || !strings.Contains(m, "walled") {
		t.Errorf("ip_allowlist meaning %q names neither the address nor the tenant", m)
	}
}

func TestSummarize(t *testing.T) {
	r := &Record{Status: 401, Identity: &IdentityStep{Result: "failed", Credential: "bearer", Check: "expired", Issuer: "https://idp"}}
	Summarize(r)
	if r.Summary != "401: identity refused: the expired check failed (issuer https://idp)" {
		t.Errorf("401: %q", r.Summary)
	}
	r = &Record{Status: 403, Identity: &IdentityStep{Result: "ok"}, Policy: &PolicyStep{Decision: "kailash/authz/result", Revision: "abc"}}
	Summarize(r)
	if r.Summary != "403: policy kailash/authz/result (revision abc) denied" {
		t.Errorf("403: %q", r.Summary)
	}
	r = &Record{Status: 429, RateLimit: []RateLimitStep{{Quota: "q", Limit: 5, Window: "minute", Count: 5}}}
	Summarize(r)
	if !strings.HasPrefix(r.Summary, "429: quota q exceeded: 5 requests per minute") {
		t.Errorf("429: %q", r.Summary)
	}
}

func TestClaimedIssuer(t *testing.T) {
	enc := base64.RawURLEncoding.EncodeToString
	tok := enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(`{"iss":"https://idp.example","sub":"x"}`)) + ".sig"
	if got := ClaimedIssuer(tok); got != "https://idp.example" {
		t.Errorf("got %q", got)
	}
	for _, bad := range []string{"", "a.b", "a.!!!.c", enc([]byte("{}")) + "." + enc([]byte(`{"iss": 5}`)) + ".s"} {
		if got := ClaimedIssuer(bad); got != "" {
			t.Errorf("%q: got %q", bad, got)
		}
	}
}

func TestRateLimitLogBounded(t *testing.T) {
	l := NewRateLimitLog(2)
	l.Add("a", RateLimitStep{Quota: "x"})
	l.Add("a", RateLimitStep{Quota: "y"})
	l.Add("b", RateLimitStep{Quota: "x"})
	l.Add("c", RateLimitStep{Quota: "x"})
	if len(l.Get("a")) != 0 || len(l.Get("b")) != 1 || len(l.Get("c")) != 1 {
		t.Errorf("a %v b %v c %v", l.Get("a"), l.Get("b"), l.Get("c"))
	}
	var off *RateLimitLog = NewRateLimitLog(0)
	off.Add("a", RateLimitStep{})
	if off.Get("a") != nil {
		t.Error("log of 0 kept a step")
	}
}
