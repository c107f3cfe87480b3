package mfa

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/testenv"
)

func TestEnrolmentCodes(t *testing.T) {
	for _, name := range []string{"memory", "redis"} {
		t.Run(name, func(t *testing.T) {
			var s EnrolmentCodes = NewMemoryCodes(nil)
			if name == "redis" {
				c := testenv.RedisClient(t)
				s = NewRedisCodes(c, "")
				defer func() {
					for _, k := range c.Keys(context.Background(), "*").Val() {
						if !strings.HasPrefix(k, DefaultRedisCodesPrefix) || c.PTTL(context.Background(), k).Val() <= 0 {
							t.Errorf("key %q: want the prefix and a TTL", k)
						}
					}
				}()
			}
			ctx := context.Background()
			code, err := NewEnrolmentCode()
			if err != nil || len(code) != 32+7 {
				t.Fatalf("code %q %v", code, err)
			}
			if err := s.Issue(ctx, "acme/uid=bob", code, time.Minute); err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct{ user, code string }{{"acme/uid=bob", "WRONG"}, {"acme/uid=alice", code}, {"globex/uid=bob", code}} {
				if ok, err := s.Redeem(ctx, c.user, c.code); ok || err != nil {
					t.Fatalf("redeemed %v: %v %v", c, ok, err)
				}
			}
			// Spelling: lower case, without dashes, spaces around.
			relaxed := " " + strings.ToLower(strings.ReplaceAll(code, "-", "")) + " "
			if ok, err := s.Redeem(ctx, "acme/uid=bob", relaxed); !ok || err != nil {
				t.Fatalf("the right code: %v %v", ok, err)
			}
			if ok, _ := s.Redeem(ctx, "acme/uid=bob", code); ok {
				t.Fatal("a code was redeemed twice")
			}
			// A new code replaces the old; concurrent redemptions: one wins.
			old := code
			_ = s.Issue(ctx, "acme/uid=bob", old, time.Minute)
			code, _ = NewEnrolmentCode()
			_ = s.Issue(ctx, "acme/uid=bob", code, time.Minute)
			if ok, _ := s.Redeem(ctx, "acme/uid=bob", old); ok {
				t.Fatal("a replaced code was redeemed")
			}
			var won atomic.Int32
			var wg sync.WaitGroup
			for range 16 {
				wg.Go(func() {
					if ok, err := s.Redeem(ctx, "acme/uid=bob", code); ok && err == nil {
						won.Add(1)
					}
				})
			}
			wg.Wait()
			if won.Load() != 1 {
				t.Fatalf("%d concurrent redemptions won", won.Load())
			}
			// Expiry.
			_ = s.Issue(ctx, "acme/uid=carol", code, 50*time.Millisecond)
			time.Sleep(120 * time.Millisecond)
			if m, ok := s.(*MemoryCodes); ok {
				m.now = func() time.Time { return time.Now().Add(time.Second) }
			}
			if ok, _ := s.Redeem(ctx, "acme/uid=carol", code); ok {
				t.Fatal("an expired code was redeemed")
			}
		})
	}
}
