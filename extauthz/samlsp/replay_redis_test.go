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

func TestRedisReplayStore(t *testing.T) {
	c := testenv.RedisClient(t)
	clock := &testClock{t: t0}
	a, b := NewRedisReplayStore(c, ""), NewRedisReplayStore(c, "") // two replicas
	a.now, b.now = clock.Now, clock.Now
	ctx := context.Background()
	if err := a.Consume(ctx, "x", t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := b.Consume(ctx, "x", t0.Add(time.Minute)); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay on the other replica: %v", err)
	}
	// Concurrent consumers: exactly one wins.
	var ok atomic.Int32
	var wg sync.WaitGroup
	for i := range 16 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			if s.Consume(ctx, "y", t0.Add(time.Minute)) == nil {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("%d concurrent consumers won", ok.Load())
	}
	for _, k := range c.Keys(ctx, "*").Val() {
		if !strings.HasPrefix(k, DefaultRedisReplayPrefix) || c.PTTL(ctx, k).Val() <= 0 {
			t.Errorf("key %q: want the prefix and a TTL", k)
		}
	}
	// An assertion already expired is not remembered past its end.
	if err := a.Consume(ctx, "z", t0.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	if err := a.Consume(ctx, "z", t0.Add(time.Minute)); err != nil {
		t.Fatalf("expired id: %v", err)
	}
	c.Close()
	if err := a.Consume(ctx, "w", t0.Add(time.Minute)); err == nil || errors.Is(err, ErrReplayed) {
		t.Fatalf("closed client: %v, want a store error", err)
	}
}

// The full ACS flow refuses a replay with the Redis store.
func TestReplayRedis(t *testing.T) {
	f := newFixture(t, nil)
	s := NewRedisReplayStore(testenv.RedisClient(t), "")
	s.now = f.clock.Now
	f.sp.replay = s
	doc := f.idp.ResponseXML(t, valid())
	ctx := context.Background()
	if _, err := f.sp.ParseResponse(ctx, post(doc, ""), []string{"req-1"}); err != nil {
		t.Fatalf("first use: %v (%v)", err, cause(err))
	}
	_, err := f.sp.ParseResponse(ctx, post(doc, ""), []string{"req-1"})
	if !errors.Is(err, ErrInvalidResponse) || Reason(err) != ReasonReplayed {
		t.Fatalf("replay: err = %v, reason %s", err, Reason(err))
	}
}
