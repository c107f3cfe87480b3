package session

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kailash-gw/kailash/internal/testenv"
)

// Fault: with Redis hung, a request meeting an unknown kid waited out the
// Redis timeout (the key-ring sync ran on the request). Now the sync runs
// in the background: the request answers from the current ring at once,
// and a key rotated on another replica is adopted once Redis answers.
func TestKnowsDoesNotWaitForAHungRedis(t *testing.T) {
	srv := testenv.StartRedis(t)
	const redisTimeout = 2 * time.Second // far above any wait a request may have
	client := func() *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr, DisableIdentity: true,
			ReadTimeout: redisTimeout, WriteTimeout: redisTimeout, DialTimeout: redisTimeout})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	a, err := NewKeyRing(KeyRingConfig{Store: NewRedisKeyStore(client(), "")})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewKeyRing(KeyRingConfig{Store: NewRedisKeyStore(client(), "")})
	if err != nil {
		t.Fatal(err)
	}
	if a.SignerKID() != b.SignerKID() {
		t.Fatal("replicas do not share the ring")
	}

	// Healthy Redis: a kid freshly rotated on A is known on B at once.
	if err := a.Rotate(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // past B's one-a-second limit
	if !b.Knows(t.Context(), a.SignerKID()) {
		t.Fatal("B does not know A's new kid with Redis healthy")
	}

	// A rotates again, then Redis hangs (every client paused 3s).
	if err := a.Rotate(); err != nil {
		t.Fatal(err)
	}
	rotated := a.SignerKID()
	admin := client()
	if err := admin.Do(context.Background(), "CLIENT", "PAUSE", 3000, "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	for i := range 3 {
		start := time.Now()
		known := b.Knows(t.Context(), "external-idp-kid")
		if took := time.Since(start); took >= redisTimeout/2 || known {
			t.Fatalf("call %d: Knows took %s (known %v) with Redis hung; it must not wait for Redis (timeout %s)", i, took, known, redisTimeout)
		}
		start = time.Now()
		_ = b.Knows(t.Context(), rotated)
		if took := time.Since(start); took >= redisTimeout/2 {
			t.Fatalf("call %d: Knows(rotated kid) took %s with Redis hung", i, took)
		}
		time.Sleep(300 * time.Millisecond)
	}
	// Redis answers again: the background sync adopts A's key.
	deadline := time.Now().Add(15 * time.Second)
	for !b.Knows(t.Context(), rotated) {
		if time.Now().After(deadline) {
			t.Fatal("B never adopted A's rotated key after Redis came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
