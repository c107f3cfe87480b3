package ratelimit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	rlcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/internal/wire"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testConfig(rlsAddr string) *config.Config {
	return &config.Config{
		RateLimit: config.RateLimit{GRPC: config.MustHostPort(rlsAddr)},
		Tenants: []config.Tenant{
			{ID: "acme", Limits: config.TenantLimits{
				MaxAPICallsPerDay: 1000, PerUserPerHour: 3,
				PerRolePerHour: map[string]uint64{"viewer": 5},
			}},
			{ID: "globex"},
		},
	}
}

func desc(kv ...string) *rlcommonv3.RateLimitDescriptor {
	d := &rlcommonv3.RateLimitDescriptor{}
	for i := 0; i < len(kv); i += 2 {
		d.Entries = append(d.Entries, &rlcommonv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	return d
}

func TestRulesMatch(t *testing.T) {
	r := NewRules(testConfig("127.0.0.1:1"))
	cases := []struct {
		d       *rlcommonv3.RateLimitDescriptor
		quota   string
		key     string
		matched bool
	}{
		{desc("tenant", "acme", "quota", "day"), "acme/tenant/day", "acme/tenant/day", true},
		{desc("tenant", "acme", "user", "alice"), "acme/user/hour", "acme/user/hour|alice", true},
		{desc("tenant", "acme", "user", "bob"), "acme/user/hour", "acme/user/hour|bob", true},
		{desc("tenant", "acme", "role", "viewer"), "acme/role/viewer/hour", "acme/role/viewer/hour", true},
		{desc("tenant", "acme", "role", "admin"), "", "", false},
		{desc("tenant", "acme", "user", ""), "", "", false},
		{desc("tenant", "globex", "quota", "day"), "", "", false},
		{desc("user", "alice"), "", "", false},
		{desc("tenant", "acme"), "", "", false},
	}
	for _, tc := range cases {
		q, key, ok := r.match(tc.d)
		if ok != tc.matched || key != tc.key || (ok && q.Name != tc.quota) {
			t.Errorf("%v: got %v %q %v", tc.d.GetEntries(), q, key, ok)
		}
	}
}

// testSlidingWindow checks the sliding-window semantics on any backend.
func testSlidingWindow(t *testing.T, b Backend) {
	ctx := context.Background()
	// The start of a minute, so window boundaries are known.
	now := time.Date(2030, 1, 1, 10, 0, 0, 0, time.UTC)
	take := func(key string, at time.Time) bool {
		t.Helper()
		r, err := b.Take(ctx, key, 10, time.Minute, 1, at)
		if err != nil {
			t.Fatal(err)
		}
		return r.Allowed
	}
	key := "k-" + time.Now().Format("150405.000000000")
	for i := range 10 {
		if !take(key, now.Add(time.Duration(i)*time.Second)) {
			t.Fatalf("request %d refused under the limit", i+1)
		}
	}
	if take(key, now.Add(30*time.Second)) {
		t.Fatal("11th request in the window allowed")
	}
	// A fixed window would allow 10 more at 10:01:00; the sliding window
	// still counts the previous minute fully, then less and less.
	if take(key, now.Add(60*time.Second)) {
		t.Fatal("allowed right after the fixed window rolled over (not sliding)")
	}
	// At 10:01:30 half of the previous window is in view: 5 used, 5 free.
	mid := now.Add(90 * time.Second)
	n := 0
	for take(key, mid) {
		n++
		if n > 10 {
			break
		}
	}
	if n != 5 {
		t.Fatalf("half-way through the next window allowed %d, want 5", n)
	}
	// Another key is independent.
	if !take(key+"-other", mid) {
		t.Fatal("an unrelated key is limited")
	}
}

func TestMemorySlidingWindow(t *testing.T) { testSlidingWindow(t, NewMemory()) }

func TestRedisSlidingWindow(t *testing.T) {
	rs := testenv.StartRedis(t)
	b := NewRedis(RedisOptions{Addr: rs.Addr})
	defer b.Close()
	testSlidingWindow(t, b)
}

func TestMemorySweepsStaleCounters(t *testing.T) {
	m := NewMemory()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 20000 {
		if _, err := m.Take(context.Background(), fmt.Sprint("k", i), 1, time.Second, 1, now); err != nil {
			t.Fatal(err)
		}
	}
	later := now.Add(time.Hour)
	for i := range 20000 {
		if _, err := m.Take(context.Background(), fmt.Sprint("n", i), 1, time.Second, 1, later); err != nil {
			t.Fatal(err)
		}
	}
	if n := m.Len(); n >= 40000 {
		t.Fatalf("%d counters: stale ones never swept", n)
	}
}

// startServer serves cfg's quotas with backend b on a free port.
func startServer(t testing.TB, cfg *config.Config, o Options) (*Server, rlsv3.RateLimitServiceClient) {
	t.Helper()
	if o.Logger == nil {
		o.Logger = discard()
	}
	s, err := New(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return s, rlsv3.NewRateLimitServiceClient(conn)
}

func userReq(user string) *rlsv3.RateLimitRequest {
	return &rlsv3.RateLimitRequest{Domain: wire.RateLimitDomain, Descriptors: []*rlcommonv3.RateLimitDescriptor{
		desc("tenant", "acme", "quota", "day"),
		desc("tenant", "acme", "user", user),
	}}
}

func TestServerPerUserQuota(t *testing.T) {
	_, c := startServer(t, testConfig(testenv.FreeAddr(t)), Options{})
	ctx := context.Background()
	for i := range 3 {
		r, err := c.ShouldRateLimit(ctx, userReq("alice"))
		if err != nil {
			t.Fatal(err)
		}
		if r.OverallCode != rlsv3.RateLimitResponse_OK {
			t.Fatalf("call %d: %v", i+1, r)
		}
		st := r.Statuses[1]
		if st.CurrentLimit.GetRequestsPerUnit() != 3 || st.CurrentLimit.GetUnit() != rlsv3.RateLimitResponse_RateLimit_HOUR || st.LimitRemaining != uint32(2-i) {
			t.Fatalf("call %d: status %v", i+1, st)
		}
	}
	r, err := c.ShouldRateLimit(ctx, userReq("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT || r.Statuses[0].Code != rlsv3.RateLimitResponse_OK || r.Statuses[1].Code != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("4th call for alice: %v", r)
	}
	if r, _ := c.ShouldRateLimit(ctx, userReq("bob")); r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		t.Fatalf("bob limited by alice's quota: %v", r)
	}
	// Other domains and unknown descriptors are not limited.
	r, err = c.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "other", Descriptors: userReq("alice").Descriptors})
	if err != nil || r.OverallCode != rlsv3.RateLimitResponse_OK {
		t.Fatalf("other domain: %v %v", r, err)
	}
}

func TestServerUpdateSwapsQuotas(t *testing.T) {
	s, c := startServer(t, testConfig(testenv.FreeAddr(t)), Options{})
	cfg := testConfig("")
	cfg.Tenants[0].Limits.PerUserPerHour = 1
	if err := s.Update(cfg); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c.ShouldRateLimit(ctx, userReq("carol"))
	if r, _ := c.ShouldRateLimit(ctx, userReq("carol")); r.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("new quota of 1 not applied: %v", r)
	}
}

func redisConfig(addr, mode string) *config.Config {
	cfg := testConfig("127.0.0.1:0")
	cfg.RateLimit.Backend = config.BackendRedis
	cfg.RateLimit.Redis.Addr = config.MustHostPort(addr)
	cfg.RateLimit.FailMode = mode
	return cfg
}

// TestTwoReplicasShareOneQuota: two servers on one real Redis enforce one
// per-user quota between them.
func TestTwoReplicasShareOneQuota(t *testing.T) {
	rs := testenv.StartRedis(t)
	_, a := startServer(t, redisConfig(rs.Addr, config.FailClosed), Options{})
	_, b := startServer(t, redisConfig(rs.Addr, config.FailClosed), Options{})
	ctx := context.Background()
	user := "dave-" + time.Now().Format("150405.000000")
	allowed := 0
	for i := range 6 {
		c := a
		if i%2 == 1 {
			c = b
		}
		r, err := c.ShouldRateLimit(ctx, userReq(user))
		if err != nil {
			t.Fatal(err)
		}
		if r.OverallCode == rlsv3.RateLimitResponse_OK {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("two replicas allowed %d calls for a quota of 3", allowed)
	}
}

// TestRedisDownFailMode: with Redis stopped, each decision applies the fail
// mode within 50ms, the breaker opens, and decisions recover when Redis is
// back.
func TestRedisDownFailMode(t *testing.T) {
	rs := testenv.StartRedis(t)
	for _, mode := range []string{config.FailClosed, config.FailOpen} {
		t.Run(mode, func(t *testing.T) {
			rs.Start()
			s, c := startServer(t, redisConfig(rs.Addr, mode), Options{})
			ctx := context.Background()
			user := "erin-" + mode
			if _, err := c.ShouldRateLimit(ctx, userReq(user)); err != nil {
				t.Fatal(err)
			}
			rs.Stop()
			for i := range 10 {
				start := time.Now()
				r, err := c.ShouldRateLimit(ctx, userReq(user))
				took := time.Since(start)
				if took > 50*time.Millisecond {
					t.Errorf("call %d with Redis down took %s (> 50ms)", i, took)
				}
				switch mode {
				case config.FailClosed:
					if status.Code(err) != codes.Unavailable {
						t.Fatalf("fail closed: got %v, %v", r, err)
					}
				case config.FailOpen:
					if err != nil || r.OverallCode != rlsv3.RateLimitResponse_OK {
						t.Fatalf("fail open: got %v, %v", r, err)
					}
				}
			}
			if v := counterValue(t, s, "kailash_ratelimit_backend_errors_total"); v < 10 {
				t.Errorf("backend errors metric %v, want >= 10", v)
			}
			if v := counterValue(t, s, "kailash_ratelimit_breaker_open"); v != 1 {
				t.Errorf("breaker_open %v, want 1", v)
			}
			rs.Start()
			testenv.Eventually(t, 5*time.Second, func() error {
				if _, err := c.ShouldRateLimit(ctx, userReq(user)); err != nil {
					return err
				}
				if v := counterValue(t, s, "kailash_ratelimit_breaker_open"); v != 0 {
					return fmt.Errorf("breaker_open %v after recovery, want 0", v)
				}
				return nil
			})
		})
	}
}

func counterValue(t *testing.T, s *Server, name string) float64 {
	t.Helper()
	mfs, err := s.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var v float64
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		return v
	}
	return 0
}

func TestBreaker(t *testing.T) {
	var events []bool
	b := breaker{after: 2, cooldown: time.Second, notify: func(open bool, _ error) { events = append(events, open) }}
	now := time.Unix(0, 0)
	b.failure(now, nil)
	if !b.allow(now) {
		t.Fatal("open after one failure")
	}
	b.failure(now, nil)
	if b.allow(now.Add(500 * time.Millisecond)) {
		t.Fatal("closed during cooldown")
	}
	if !b.allow(now.Add(2 * time.Second)) {
		t.Fatal("no probe after cooldown")
	}
	if b.allow(now.Add(2 * time.Second)) {
		t.Fatal("second concurrent probe allowed")
	}
	b.success()
	if !b.allow(now.Add(2 * time.Second)) {
		t.Fatal("still open after a successful probe")
	}
	if len(events) != 2 || !events[0] || events[1] {
		t.Fatalf("events %v", events)
	}
}

// A call carrying the decision id descriptor (which counts nothing and is
// answered OK) has its over-limit quotas kept under that id: Explain and
// GET /v1/admin/explain/{id} on the HTTP port.
func TestOverLimitKeptByDecisionID(t *testing.T) {
	cfg := testConfig(testenv.FreeAddr(t))
	cfg.RateLimit.HTTP = config.MustHostPort(testenv.FreeAddr(t))
	s, c := startServer(t, cfg, Options{})
	ctx := context.Background()
	call := func(dec string) *rlsv3.RateLimitResponse {
		req := userReq("alice")
		req.Descriptors = append(req.Descriptors, desc(wire.DescDecisionID, dec))
		r, err := c.ShouldRateLimit(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Statuses) != 3 || r.Statuses[2].Code != rlsv3.RateLimitResponse_OK || r.Statuses[2].CurrentLimit != nil {
			t.Fatalf("the decision id descriptor was limited: %v", r)
		}
		return r
	}
	for i := range 3 {
		call(fmt.Sprintf("ok-%d", i))
	}
	if r := call("over"); r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("4th call: %v", r)
	}
	if got := s.Explain("ok-2"); len(got) != 0 {
		t.Errorf("an allowed call was kept: %v", got)
	}
	steps := s.Explain("over")
	if len(steps) != 1 || steps[0].Limit != 3 || steps[0].Window != "hour" || steps[0].Count != 3 || steps[0].Descriptor["user"] != "alice" {
		t.Fatalf("steps %+v", steps)
	}
	var got []map[string]any
	testenv.Eventually(t, 10*time.Second, func() error {
		resp, err := http.Get("http://" + s.HTTPAddr() + "/v1/admin/explain/over")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&got)
	})
	if len(got) != 1 || got[0]["quota"] != steps[0].Quota {
		t.Errorf("GET /v1/admin/explain/over: %v", got)
	}
}
