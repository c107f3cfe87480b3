package samlsp

import (
	"context"
	"errors"
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
				m := NewMemoryRequestStore(0, clock.Now)
				a, b = m, m
			} else {
				c := testenv.RedisClient(t)
				a, b = NewRedisRequestStore(c, "", clock.Now), NewRedisRequestStore(c, "", clock.Now)
			}
			ctx := context.Background()
			if err := a.Remember(ctx, "id-1", "acme", t0.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			if tenant, ok, err := b.Take(ctx, "id-1"); tenant != "acme" || !ok || err != nil {
				t.Fatalf("take on the other replica: %q %v %v", tenant, ok, err)
			}
			for _, s := range []RequestStore{a, b} {
				if _, ok, err := s.Take(ctx, "id-1"); ok || err != nil {
					t.Fatalf("taken twice: %v %v", ok, err)
				}
			}
			if _, ok, _ := a.Take(ctx, "never-sent"); ok {
				t.Fatal("an unknown id was taken")
			}
			// Concurrent takers on both replicas: exactly one wins.
			_ = a.Remember(ctx, "id-2", "acme", t0.Add(time.Minute))
			var won atomic.Int32
			var wg sync.WaitGroup
			for i := range 16 {
				s := []RequestStore{a, b}[i%2]
				wg.Go(func() {
					if _, ok, err := s.Take(ctx, "id-2"); ok && err == nil {
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
			_ = a.Remember(ctx, "id-3", "acme", t0.Add(ttl))
			clock.Add(ttl)
			time.Sleep(ttl + 50*time.Millisecond)
			if _, ok, _ := b.Take(ctx, "id-3"); ok {
				t.Fatal("an expired request was taken")
			}
			if rs, ok := a.(*RedisRequestStore); ok {
				_ = a.Remember(ctx, "id-4", "acme", clock.Now().Add(time.Minute))
				for _, k := range rs.c.Keys(ctx, "*").Val() {
					if !strings.HasPrefix(k, "kailash:saml:req:") || rs.c.PTTL(ctx, k).Val() <= 0 {
						t.Errorf("key %q: want the prefix and a TTL", k)
					}
				}
				_ = rs.c.(interface{ Close() error }).Close()
				if _, _, err := a.Take(ctx, "id-4"); err == nil {
					t.Fatal("closed client: want a store error")
				}
			}
		})
	}
}

func TestMemoryRequestStoreBounded(t *testing.T) {
	clock := &testClock{t: t0}
	s := NewMemoryRequestStore(2, clock.Now)
	ctx := context.Background()
	_ = s.Remember(ctx, "a", "acme", t0.Add(time.Second))
	_ = s.Remember(ctx, "b", "acme", t0.Add(time.Minute))
	if err := s.Remember(ctx, "c", "acme", t0.Add(time.Minute)); !errors.Is(err, ErrTooManyRequests) {
		t.Fatalf("full: %v", err)
	}
	clock.Add(2 * time.Second)
	if err := s.Remember(ctx, "c", "acme", t0.Add(time.Minute)); err != nil {
		t.Fatalf("after a request expired: %v", err)
	}
}
