package mfa

import (
	"context"
	"strings"
	"testing"

	"github.com/kailash-gw/kailash/internal/testenv"
)

func newUsedSteps(t testing.TB) UsedSteps {
	t.Helper()
	if !testenv.IsRedis(t) {
		return NewMemoryUsedSteps()
	}
	return NewRedisUsedSteps(testenv.RedisClient(t), "", 0)
}

// Two replicas share the last used step: a code accepted by one is refused
// by the other.
func TestRedisUsedStepsShared(t *testing.T) {
	c := testenv.RedisClient(t)
	a, b := NewRedisUsedSteps(c, "", 0), NewRedisUsedSteps(c, "", 0)
	ctx := context.Background()
	for _, tc := range []struct {
		s    UsedSteps
		step int64
		want bool
	}{{a, 100, true}, {b, 100, false}, {b, 99, false}, {b, 101, true}, {a, 101, false}, {a, 102, true}} {
		got, err := tc.s.Use(ctx, "alice", tc.step)
		if err != nil || got != tc.want {
			t.Fatalf("Use(%d) = %v, %v; want %v", tc.step, got, err, tc.want)
		}
	}
	if ok, _ := a.Use(ctx, "bob", 1); !ok {
		t.Fatal("bob has his own steps")
	}
	for _, k := range c.Keys(ctx, "*").Val() {
		if !strings.HasPrefix(k, "kailash:totp:") || c.PTTL(ctx, k).Val() <= 0 {
			t.Errorf("key %q: want the prefix and a TTL", k)
		}
	}
}
