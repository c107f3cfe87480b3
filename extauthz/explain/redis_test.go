package explain

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/redisclient"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// Two replicas on one real Redis: the Check recorded on one and Envoy's
// access log on the other make one record, found on either by request id
// or decision id, with the policy input the Check kept.
func TestSharedRecordsAcrossReplicas(t *testing.T) {
	rd := testenv.StartRedis(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	newReplica := func() *Store {
		c := redisclient.New(rd.Addr, "", 0, time.Second)
		t.Cleanup(func() { c.Close() })
		s := NewStore(16)
		s.SetShared(NewShared(ctx, c, time.Minute))
		return s
	}
	a, b := newReplica(), newReplica()
	a.Update("dec-1", "req-1", func(r *Record) {
		r.Outcome, r.Reason, r.Tenant = "deny", "policy", "acme"
		r.Identity = &IdentityStep{Result: "ok", Credential: "bearer", Subject: "bob"}
		r.Policy = &PolicyStep{Decision: "kailash/authz/result", Revision: "r1"}
	})
	a.ShareCheck("dec-1", []byte(`{"attributes":{"request":{"http":{"method":"POST"}}}}`))
	b.Update("dec-1", "req-1", func(r *Record) {
		r.Status, r.Outcome = 403, "allow" // what the edge alone would say
		r.Edge = &EdgeStep{Status: 403, Check: "authz", Details: "ext_authz_denied"}
	})
	b.ShareEdge("req-1")

	for _, s := range []*Store{a, b} {
		for _, id := range []string{"req-1", "dec-1"} {
			var r Record
			var in []byte
			testenv.Eventually(t, 10*time.Second, func() error {
				var ok bool
				var err error
				r, in, ok, err = s.Lookup(ctx, id)
				if err != nil || !ok || r.Edge == nil || r.Policy == nil {
					return fmt.Errorf("lookup %s: ok=%v err=%v record %+v", id, ok, err, r)
				}
				return nil
			})
			if r.Outcome != "deny" || r.Identity.Subject != "bob" || r.Status != 403 || r.Edge.Check != "authz" || r.RequestID != "req-1" {
				t.Errorf("%s: record %+v", id, r)
			}
			if s == b && len(in) == 0 {
				t.Errorf("replica b has no policy input for %s", id)
			}
		}
	}
	if _, _, ok, _ := b.Lookup(ctx, "nothing"); ok {
		t.Error("an unknown id was found")
	}

	// The rate-limit service's over-limit steps, shared the same way.
	l1, l2 := NewRateLimitLog(4), NewRateLimitLog(4)
	c := redisclient.New(rd.Addr, "", 0, time.Second)
	defer c.Close()
	l1.Share(ctx, c, time.Minute)
	l2.Share(ctx, c, time.Minute)
	l1.Add("dec-9", RateLimitStep{Quota: "acme/day", Limit: 5, Window: "day", Count: 5})
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := l2.GetShared(ctx, "dec-9"); len(got) != 1 || got[0].Quota != "acme/day" {
			return fmt.Errorf("replica 2 sees %v", got)
		}
		return nil
	})
}
