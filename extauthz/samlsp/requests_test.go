package samlsp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/testenv"
)

// Both request stores: remembered ids are taken once, for their tenant,
// until they expire; two replicas (two Redis stores on one server) share
// them.
func TestRequestStores(t *testing.T) {
	for _, name := range []string{"memory", "redis"} {
		t.Run(name, func(t *testing.T) {
			clock := &testClock{t: t0}
			var a, b RequestStore
			if name == "memory" {
				m := NewMemoryRequestStore(clock.Now)
				a, b = m, m
			} else {
				c := testenv.RedisClient(t)
				a, b = NewRedisRequestStore(c, "", clock.Now), NewRedisRequestStore(c, "", clock.Now)
			}
			ctx := context.Background()
			if err := a.Remember(ctx, "acme", "id-1", t0.Add(time.Minute), 0); err != nil {
				t.Fatal(err)
			}
			if ok, err := b.Take(ctx, "globex", "id-1"); ok || err != nil {
				t.Fatalf("another tenant took the request: %v %v", ok, err)
			}
			if ok, err := b.Take(ctx, "acme", "id-1"); !ok || err != nil {
				t.Fatalf("take on the other replica: %v %v", ok, err)
			}
			for _, s := range []RequestStore{a, b} {
				if ok, err := s.Take(ctx, "acme", "id-1"); ok || err != nil {
					t.Fatalf("taken twice: %v %v", ok, err)
				}
			}
			if ok, _ := a.Take(ctx, "acme", "never-sent"); ok {
				t.Fatal("an unknown id was taken")
			}
			// Concurrent takers on both replicas: exactly one wins.
			_ = a.Remember(ctx, "acme", "id-2", t0.Add(time.Minute), 0)
			var won atomic.Int32
			var wg sync.WaitGroup
			for i := range 16 {
				s := []RequestStore{a, b}[i%2]
				wg.Go(func() {
					if ok, err := s.Take(ctx, "acme", "id-2"); ok && err == nil {
						won.Add(1)
					}
				})
			}
			wg.Wait()
			if won.Load() != 1 {
				t.Fatalf("%d concurrent takers won", won.Load())
			}
			// Expiry: by the clock in memory, by the TTL in Redis.
			ttl := 100 * time.Millisecond
			_ = a.Remember(ctx, "acme", "id-3", t0.Add(ttl), 0)
			clock.Add(ttl)
			time.Sleep(ttl + 50*time.Millisecond)
			if ok, _ := b.Take(ctx, "acme", "id-3"); ok {
				t.Fatal("an expired request was taken")
			}
			if rs, ok := a.(*RedisRequestStore); ok {
				_ = a.Remember(ctx, "acme", "id-4", clock.Now().Add(time.Minute), 0)
				for _, k := range rs.c.Keys(ctx, "*").Val() {
					if !strings.HasPrefix(k, "kailash:saml:req:") || rs.c.PTTL(ctx, k).Val() <= 0 {
						t.Errorf("key %q: want the prefix and a TTL", k)
					}
				}
				_ = rs.c.(interface{ Close() error }).Close()
				if _, err := a.Take(ctx, "acme", "id-4"); err == nil {
					t.Fatal("closed client: want a store error")
				}
			}
		})
	}
}

// Each tenant is bounded on its own: a tenant flooding login starts fills
// only its own share; another tenant's pending request stays pending and
// its new logins still start. Expired requests make room again.
func TestRequestStoresBoundedPerTenant(t *testing.T) {
	for _, name := range []string{"memory", "redis"} {
		t.Run(name, func(t *testing.T) {
			clock := &testClock{t: t0}
			var s RequestStore = NewMemoryRequestStore(clock.Now)
			if name == "redis" {
				s = NewRedisRequestStore(testenv.RedisClient(t), "", clock.Now)
			}
			ctx := context.Background()
			const max = 50
			if err := s.Remember(ctx, "victim", "pending-1", t0.Add(time.Minute), max); err != nil {
				t.Fatal(err)
			}
			refused := 0
			for i := range 5 * max {
				err := s.Remember(ctx, "flood", fmt.Sprintf("f-%d", i), t0.Add(10*time.Minute), max)
				switch {
				case errors.Is(err, ErrTooManyRequests):
					refused++
				case err != nil:
					t.Fatal(err)
				}
			}
			if refused != 4*max {
				t.Fatalf("the flooding tenant: %d refused, want %d", refused, 4*max)
			}
			if err := s.Remember(ctx, "victim", "pending-2", t0.Add(time.Minute), max); err != nil {
				t.Fatalf("the other tenant cannot start a login: %v", err)
			}
			for _, id := range []string{"pending-1", "pending-2"} {
				if ok, err := s.Take(ctx, "victim", id); !ok || err != nil {
					t.Fatalf("the other tenant's %s was pushed out: %v %v", id, ok, err)
				}
			}
			// The flood's requests expire: the tenant may start again.
			clock.Add(10*time.Minute + time.Second)
			if err := s.Remember(ctx, "flood", "after", t0.Add(20*time.Minute), max); err != nil {
				t.Fatalf("after the flood expired: %v", err)
			}
		})
	}
}

func TestMemoryRequestStoreBounded(t *testing.T) {
	clock := &testClock{t: t0}
	s := NewMemoryRequestStore(clock.Now)
	ctx := context.Background()
	_ = s.Remember(ctx, "acme", "a", t0.Add(time.Second), 2)
	_ = s.Remember(ctx, "acme", "b", t0.Add(time.Minute), 2)
	if err := s.Remember(ctx, "acme", "c", t0.Add(time.Minute), 2); !errors.Is(err, ErrTooManyRequests) {
		t.Fatalf("full: %v", err)
	}
	clock.Add(2 * time.Second)
	if err := s.Remember(ctx, "acme", "c", t0.Add(time.Minute), 2); err != nil {
		t.Fatalf("after a request expired: %v", err)
	}
}
