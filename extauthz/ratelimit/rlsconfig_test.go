package ratelimit

import (
	"context"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	rlcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// Configs written after envoyproxy/ratelimit's README examples (format
// unchanged: what their users run).
const rlsMessaging = `
domain: messaging
descriptors:
  # marketing messages to one number: 5 a day
  - key: message_type
    value: marketing
    descriptors:
      - key: to_number
        rate_limit:
          unit: day
          requests_per_unit: 5
  # any message to one number: 100 a day
  - key: to_number
    rate_limit:
      unit: day
      requests_per_unit: 100
  - key: remote_address
    value: 10.0.0.1
    rate_limit:
      unlimited: true
  - key: remote_address
    rate_limit:
      unit: second
      requests_per_unit: 10
  - key: path
    value: /api/*
    rate_limit:
      unit: minute
      requests_per_unit: 2
  - key: path
    value: /v*/items
    rate_limit:
      unit: hour
      requests_per_unit: 3
  - key: client
    value: shadowed
    shadow_mode: true
    detailed_metric: true
    rate_limit:
      unit: second
      requests_per_unit: 1
  - key: user
    value: bkthomps
    rate_limit:
      name: per-user
      unit: minute
      requests_per_unit: 2
  - key: user
    value: bkthomps
    descriptors: []
    rate_limit: {unit: second, requests_per_unit: 1}
`

func rlsDesc(kv ...string) *rlcommonv3.RateLimitDescriptor { return desc(kv...) }

func TestRLSConfigErrors(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"unknown key", "domain: d\ndescriptors:\n  - key: a\n    rate_limt: {unit: second}\n", "f.yaml:4:5: descriptors[0].rate_limt: config error, unknown key 'rate_limt'"},
		{"bad unit", "domain: d\ndescriptors:\n  - key: a\n    descriptors:\n      - key: b\n        rate_limit: {unit: fortnight, requests_per_unit: 1}\n", "f.yaml: descriptors[0].descriptors[0] (d.a.b): invalid rate limit unit 'fortnight'"},
		{"empty key", "domain: d\ndescriptors:\n  - value: a\n", "f.yaml: descriptors[0]: descriptor has empty key"},
		{"duplicate", "domain: d\ndescriptors:\n  - key: a\n    value: b\n  - key: a\n    value: b\n", "duplicate descriptor composite key 'd.a_b'"},
		{"unlimited with unit", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unlimited: true, unit: second}\n", "should not specify rate limit unit when unlimited"},
		{"replaces self", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, name: x, replaces: [{name: x}]}\n", "replaces should not contain name of same descriptor"},
		{"replaces empty", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, replaces: [{}]}\n", "should not have an empty replaces entry"},
		{"empty domain", "descriptors: []\n", "f.yaml: config file cannot have empty domain"},
		{"list of scalars", "domain: d\ndescriptors: [a]\n", "descriptors[0]: config error, yaml file contains list of type other than map"},
		{"share_threshold without wildcard", "domain: d\ndescriptors:\n  - key: a\n    value: b\n    share_threshold: true\n", "share_threshold can only be used with wildcard values"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseRLSConfig(map[string][]byte{"f.yaml": []byte(c.yaml)})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
		})
	}
	_, err := ParseRLSConfig(map[string][]byte{"a.yaml": []byte("domain: d\n"), "b.yaml": []byte("domain: d\n")})
	if err == nil || !strings.Contains(err.Error(), "b.yaml: duplicate domain 'd' in config file") {
		t.Fatalf("duplicate domain across files: %v", err)
	}
}

func TestRLSConfigLimit(t *testing.T) {
	_, err := ParseRLSConfig(map[string][]byte{"messaging.yaml": []byte(rlsMessaging)})
	if err == nil || !strings.Contains(err.Error(), "duplicate descriptor composite key 'messaging.user_bkthomps'") {
		t.Fatalf("the duplicate at the end must be refused: %v", err)
	}
	c, err := ParseRLSConfig(map[string][]byte{"messaging.yaml": []byte(rlsMessaging[:strings.LastIndex(rlsMessaging, "  - key: user")])})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		d    *rlcommonv3.RateLimitDescriptor
		want string // FullKey, "" for no limit
	}{
		{rlsDesc("message_type", "marketing", "to_number", "2061234567"), "messaging.message_type_marketing.to_number"},
		{rlsDesc("to_number", "2061234567"), "messaging.to_number"},
		// a value match beats the key-only default; the default is used otherwise
		{rlsDesc("remote_address", "10.0.0.1"), "messaging.remote_address_10.0.0.1"},
		{rlsDesc("remote_address", "10.0.0.2"), "messaging.remote_address"},
		// the limit applies only at the descriptor's last entry
		{rlsDesc("message_type", "marketing"), ""},
		{rlsDesc("to_number", "1", "extra", "x"), ""},
		{rlsDesc("message_type", "transactional", "to_number", "1"), ""},
		// wildcards: trailing and middle
		{rlsDesc("path", "/api/users"), "messaging.path_/api/*"},
		{rlsDesc("path", "/api/"), "messaging.path_/api/*"},
		{rlsDesc("path", "/v2/items"), "messaging.path_/v*/items"},
		{rlsDesc("path", "/v2/things"), ""},
		{rlsDesc("nope", "x"), ""},
	}
	for _, tc := range cases {
		l := c.Limit("messaging", tc.d)
		got := ""
		if l != nil {
			got = l.FullKey
		}
		if got != tc.want {
			t.Errorf("%v: limit %q, want %q", tc.d.GetEntries(), got, tc.want)
		}
	}
	if c.Limit("other", rlsDesc("to_number", "1")) != nil {
		t.Error("unknown domain must have no limit")
	}
	if l := c.Limit("messaging", rlsDesc("client", "shadowed")); l == nil || !l.ShadowMode || !l.DetailedMetric {
		t.Errorf("shadow_mode/detailed_metric not loaded: %+v", l)
	}
}

func newRLSServer(t *testing.T, yaml string, now *time.Time, b Backend) *Server {
	t.Helper()
	c, err := ParseRLSConfig(map[string][]byte{"c.yaml": []byte(yaml)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(&config.Config{RateLimit: config.RateLimit{GRPC: config.MustHostPort("127.0.0.1:0")}}, Options{
		Logger: discard(), Now: func() time.Time { return *now }, RLSConfig: c, RLSResponseHeaders: true, Backend: b,
		DecisionTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func rlsCall(t *testing.T, s *Server, domain string, ds ...*rlcommonv3.RateLimitDescriptor) *rlsv3.RateLimitResponse {
	t.Helper()
	r, err := s.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: domain, Descriptors: ds})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRLSDecisions(t *testing.T) {
	now := time.Unix(1_700_000_020, 0) // 40s into a minute
	yaml := rlsMessaging[:strings.LastIndex(rlsMessaging, "  - key: user")] + `
  - key: user
    rate_limit: {name: per-user, unit: minute, requests_per_unit: 2}
  - key: vip
    rate_limit: {unit: minute, requests_per_unit: 100, replaces: [{name: per-user}]}
`
	s := newRLSServer(t, yaml, &now, NewMemory())
	const OK, OVER = rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT

	// Fixed window of 2 a minute: remaining 1, 0, then over; reset at the minute.
	for i, want := range []struct {
		code      rlsv3.RateLimitResponse_Code
		remaining uint32
	}{{OK, 1}, {OK, 0}, {OVER, 0}, {OVER, 0}} {
		r := rlsCall(t, s, "messaging", rlsDesc("user", "alice"))
		st := r.Statuses[0]
		if r.OverallCode != want.code || st.Code != want.code || st.LimitRemaining != want.remaining {
			t.Fatalf("call %d: overall %v, status %v remaining %d; want %v %d", i, r.OverallCode, st.Code, st.LimitRemaining, want.code, want.remaining)
		}
		if st.CurrentLimit.GetRequestsPerUnit() != 2 || st.CurrentLimit.GetUnit() != rlsv3.RateLimitResponse_RateLimit_MINUTE || st.CurrentLimit.GetName() != "per-user" {
			t.Fatalf("current_limit %v", st.CurrentLimit)
		}
		if st.DurationUntilReset.AsDuration() != 20*time.Second {
			t.Fatalf("duration_until_reset %v, want 20s", st.DurationUntilReset.AsDuration())
		}
		hs := map[string]string{}
		for _, h := range r.ResponseHeadersToAdd {
			hs[h.Key] = h.Value
		}
		if hs[HeaderRateLimitLimit] != "2" || hs[HeaderRateLimitRemaining] != itoa(want.remaining) || hs[HeaderRateLimitReset] != "20" {
			t.Fatalf("call %d: headers %v", i, hs)
		}
	}
	// Other values count apart (the key-only default is per value).
	if r := rlsCall(t, s, "messaging", rlsDesc("user", "bob")); r.OverallCode != OK {
		t.Fatal("bob shares alice's counter")
	}
	// Fixed window: the next minute starts from zero (a sliding window would not).
	now = now.Add(20 * time.Second)
	if r := rlsCall(t, s, "messaging", rlsDesc("user", "alice")); r.OverallCode != OK || r.Statuses[0].LimitRemaining != 1 {
		t.Fatalf("new window: %v", r)
	}

	// replaces: with vip matched, per-user is not applied (OK, no limit) while vip counts.
	for range 3 {
		rlsCall(t, s, "messaging", rlsDesc("user", "carol"))
	}
	r := rlsCall(t, s, "messaging", rlsDesc("user", "carol"), rlsDesc("vip", "carol"))
	if r.OverallCode != OK || r.Statuses[0].CurrentLimit != nil || r.Statuses[1].CurrentLimit.GetRequestsPerUnit() != 100 || r.Statuses[1].LimitRemaining != 99 {
		t.Fatalf("replaces: %v", r)
	}
	if r := rlsCall(t, s, "messaging", rlsDesc("user", "carol")); r.OverallCode != OVER {
		t.Fatalf("without vip carol is over: %v", r)
	}

	// unlimited: OK, limit_remaining MaxUint32, no current_limit, whatever the count.
	for range 20 {
		r := rlsCall(t, s, "messaging", rlsDesc("remote_address", "10.0.0.1"))
		if st := r.Statuses[0]; st.Code != OK || st.LimitRemaining != math.MaxUint32 || st.CurrentLimit != nil {
			t.Fatalf("unlimited: %v", st)
		}
	}

	// shadow_mode: counted, over the limit, still OK.
	before := testutilCounter(t, s, "shadow_over_limit")
	for i := range 3 {
		r := rlsCall(t, s, "messaging", rlsDesc("client", "shadowed"))
		if r.OverallCode != OK || r.Statuses[0].Code != OK {
			t.Fatalf("shadow call %d: %v", i, r)
		}
		if i > 0 && r.Statuses[0].LimitRemaining != 0 {
			t.Fatalf("shadow over-limit remaining %d", r.Statuses[0].LimitRemaining)
		}
	}
	if got := testutilCounter(t, s, "shadow_over_limit") - before; got != 2 {
		t.Fatalf("shadow over-limit decisions recorded %v, want 2", got)
	}

	// One over-limit descriptor makes the whole answer OVER_LIMIT; no match is OK with no limit.
	r = rlsCall(t, s, "messaging", rlsDesc("nope", "x"), rlsDesc("user", "carol"))
	if r.OverallCode != OVER || r.Statuses[0].Code != OK || r.Statuses[0].CurrentLimit != nil || r.Statuses[1].Code != OVER {
		t.Fatalf("mixed: %v", r)
	}
	// Unknown domains keep kailash's own answer (OK).
	if r := rlsCall(t, s, "other", rlsDesc("user", "alice")); r.OverallCode != OK {
		t.Fatalf("unknown domain: %v", r)
	}
}

// Two replicas on one Redis give one fixed-window limit.
func TestRLSRedisReplicaPair(t *testing.T) {
	rd := testenv.StartRedis(t)
	now := time.Unix(1_700_000_000, 0)
	yaml := "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: minute, requests_per_unit: 3}\n"
	a := newRLSServer(t, yaml, &now, NewRedis(RedisOptions{Addr: rd.Addr, Timeout: time.Second}))
	b := newRLSServer(t, yaml, &now, NewRedis(RedisOptions{Addr: rd.Addr, Timeout: time.Second}))
	var codes []rlsv3.RateLimitResponse_Code
	for i := range 5 {
		s := a
		if i%2 == 1 {
			s = b
		}
		codes = append(codes, rlsCall(t, s, "d", rlsDesc("k", "v")).OverallCode)
	}
	want := make([]rlsv3.RateLimitResponse_Code, 5)
	for i := range want {
		want[i] = rlsv3.RateLimitResponse_OK
		if i >= 3 {
			want[i] = rlsv3.RateLimitResponse_OVER_LIMIT
		}
	}
	for i := range want {
		if codes[i] != want[i] {
			t.Fatalf("codes across replicas %v, want %v", codes, want)
		}
	}
}

func itoa(u uint32) string { return strconv.FormatUint(uint64(u), 10) }

func testutilCounter(t *testing.T, s *Server, result string) float64 {
	t.Helper()
	return testutil.ToFloat64(s.m.decisions.WithLabelValues(result))
}
