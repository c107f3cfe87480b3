package lockout

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/testenv"
)

func newStore(t testing.TB, now func() time.Time) Store {
	t.Helper()
	if !testenv.IsRedis(t) {
		return NewMemoryStore(now)
	}
	return NewRedisStore(testenv.RedisClient(t), "kailash:test:"+t.Name()+":", now)
}

// Two guards (two replicas) on one Redis count failures together.
func TestRedisGuardsShareCounts(t *testing.T) {
	c := testenv.RedisClient(t)
	clk := &clock{t: time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)}
	cfg := Config{MaxFailures: 4, MaxAddressFailures: 100, Now: clk.Now}
	a := New(NewRedisStore(c, "", clk.Now), cfg)
	b := New(NewRedisStore(c, "", clk.Now), cfg)
	ctx := context.Background()
	alice := AccountKey("acme", "uid=alice,ou=people,dc=example,dc=com")
	for i, g := range []*Guard{a, b, a} {
		if err := g.Failure(ctx, alice, "10.0.0.1"); err != nil {
			t.Fatalf("failure %d: %v", i+1, err)
		}
	}
	if err := b.Failure(ctx, alice, "10.0.0.2"); !errors.Is(err, ErrLocked) {
		t.Fatalf("4th failure, on B: %v", err)
	}
	if err := a.Check(ctx, alice, ""); !errors.Is(err, ErrLocked) {
		t.Fatalf("A does not see B's lock: %v", err)
	}
	if err := a.Failure(ctx, UserKey("acme", "ＮＯＢＯＤＹ"), ""); err != nil {
		t.Fatalf("an unknown user: %v", err)
	}
	clk.Add(DefaultLockFor)
	if err := a.Check(ctx, alice, ""); err != nil {
		t.Fatalf("after the lock: %v", err)
	}
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "kailash:lockout:") || c.PTTL(ctx, k).Val() <= 0 {
			t.Errorf("key %q: want the prefix and a TTL", k)
		}
	}
}
