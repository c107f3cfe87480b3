package session

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kailash-gw/kailash/internal/testenv"
)

// redisServers are the servers started per top-level test.
var redisServers sync.Map // top-level test name → *redis.Client

func newStore(t testing.TB) Store {
	t.Helper()
	if !testenv.IsRedis(t) {
		return NewMemoryStore()
	}
	return NewRedisStore(redisClient(t), "kailash:test:"+t.Name()+":")
}

// redisClient returns a client of a redis-server started for t's top-level
// test (and its subtests).
func redisClient(t testing.TB) *redis.Client {
	t.Helper()
	top := strings.SplitN(t.Name(), "/", 2)[0]
	if c, ok := redisServers.Load(top); ok {
		return c.(*redis.Client)
	}
	c := testenv.RedisClient(t)
	redisServers.Store(top, c)
	t.Cleanup(func() { redisServers.Delete(top) })
	return c
}

// Two Managers on one Redis are two replicas: a session issued by one is
// verified by the other, and a logout on either is seen by the other
// within RecheckEvery.
func TestReplicasShareSessions(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		const recheck = time.Second
		keys := NewRedisKeyStore(redisClient(t), "")
		f := newFixture(t, Config{RecheckEvery: recheck}, KeyRingConfig{Store: keys})
		// Replica B: its own ring (sharing the keys) and store client.
		ringB, err := NewKeyRing(KeyRingConfig{Store: keys, Now: f.clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		b, err := NewManager(f.m.cfg, ringB, NewRedisStore(redisClient(t), "kailash:test:"+t.Name()+":"))
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		tok := f.issue(t, alice)
		if _, err := b.Verify(ctx, tok.AccessToken); err != nil {
			t.Fatalf("replica B: %v", err)
		}
		if _, err := f.m.Verify(ctx, tok.AccessToken); err != nil {
			t.Fatalf("replica A: %v", err)
		}
		if err := b.Logout(ctx, tok.AccessToken); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Verify(ctx, tok.AccessToken); !errors.Is(err, ErrRevoked) {
			t.Fatalf("B after its logout: %v", err)
		}
		// A still has the session tracked: it is refused once RecheckEvery
		// has passed since A last asked the store, not later.
		f.clk.Add(recheck - time.Millisecond)
		if _, err := f.m.Verify(ctx, tok.AccessToken); err != nil {
			t.Fatalf("A within the bound (stale allowed): %v", err)
		}
		f.clk.Add(time.Millisecond)
		if _, err := f.m.Verify(ctx, tok.AccessToken); !errors.Is(err, ErrRevoked) {
			t.Fatalf("A after %s: got %v, want ErrRevoked", recheck, err)
		}
		if _, err := f.m.Refresh(ctx, tok.RefreshToken); !errors.Is(err, ErrInvalidRefresh) {
			t.Fatalf("refresh on A: %v", err)
		}

		// Refresh-token reuse detected on B revokes on A too.
		tok = f.issue(t, alice)
		if _, err := f.m.Verify(ctx, tok.AccessToken); err != nil {
			t.Fatal(err)
		}
		if _, err := f.m.Refresh(ctx, tok.RefreshToken); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Refresh(ctx, tok.RefreshToken); !errors.Is(err, ErrRefreshReused) {
			t.Fatalf("reuse on B: %v", err)
		}
		f.clk.Add(recheck)
		if _, err := f.m.Verify(ctx, tok.AccessToken); !errors.Is(err, ErrRevoked) {
			t.Fatalf("A after reuse on B: %v", err)
		}

		// Activity on A keeps the session alive on B past B's own idea of
		// the idle timeout (B merges the activity A persisted).
		tok = f.issue(t, alice)
		if _, err := b.Verify(ctx, tok.AccessToken); err != nil {
			t.Fatal(err)
		}
		for range 5 { // 50 minutes of use on A only
			f.clk.Add(10 * time.Minute)
			if _, err := f.m.Verify(ctx, tok.AccessToken); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := b.Verify(ctx, tok.AccessToken); err != nil {
			t.Fatalf("B after activity on A: %v", err)
		}
	})
}

// Nothing a RedisStore writes lives forever.
func TestRedisStoreKeysExpire(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		f := newFixture(t, Config{}, KeyRingConfig{})
		ctx := context.Background()
		tok := f.issue(t, alice)
		if _, err := f.m.Refresh(ctx, tok.RefreshToken); err != nil {
			t.Fatal(err)
		}
		c := redisClient(t)
		keys, err := c.Keys(ctx, "*").Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) < 5 {
			t.Fatalf("keys: %v", keys)
		}
		for _, k := range keys {
			if !strings.HasPrefix(k, "kailash:") {
				t.Errorf("key %q lacks the kailash: prefix", k)
			}
			if ttl := c.PTTL(ctx, k).Val(); ttl <= 0 {
				t.Errorf("key %q has no TTL (%s)", k, ttl)
			}
		}
	})
}

// Rings sharing a KeyStore sign with one key, rotate once for all, and
// verify each other's tokens right after a rotation.
func TestSharedKeyRing(t *testing.T) {
	c := redisClient(t)
	ctx := context.Background()
	clk := &clock{t: time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)}
	keys := NewRedisKeyStore(c, "")
	rings := make([]*KeyRing, 4)
	var wg sync.WaitGroup
	for i := range rings { // concurrent first start on an empty store
		wg.Go(func() {
			r, err := NewKeyRing(KeyRingConfig{Store: keys, Now: clk.Now, RotateEvery: time.Hour, Overlap: 9 * time.Hour})
			if err != nil {
				t.Error(err)
			}
			rings[i] = r
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	a, b := rings[0], rings[3]
	for _, r := range rings {
		if !sameKeys(r, a) {
			t.Fatalf("rings disagree: %v vs %v", r.KeyIDs(), a.KeyIDs())
		}
	}
	cfg := Config{Issuer: "i", Audience: []string{"a"}, Now: clk.Now}
	store := NewRedisStore(c, "")
	ma, err := NewManager(cfg, a, store)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := NewManager(cfg, b, store)
	if err != nil {
		t.Fatal(err)
	}
	// A rotates explicitly: B verifies A's new tokens at once (unknown kid
	// → sync) and then signs with the same key.
	old := a.KeyIDs()[0]
	if err := a.Rotate(); err != nil {
		t.Fatal(err)
	}
	tok, err := ma.Issue(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mb.Verify(ctx, tok.AccessToken); err != nil {
		t.Fatalf("B verifying A's token after A rotated: %v", err)
	}
	if b.KeyIDs()[0] == old || b.KeyIDs()[0] != a.KeyIDs()[0] {
		t.Fatalf("B did not adopt A's key: %v vs %v", b.KeyIDs(), a.KeyIDs())
	}
	// Scheduled rotation happens once, whoever sees it first.
	clk.Add(time.Hour)
	changed, err := b.RotateIfDue()
	if err != nil || !changed {
		t.Fatalf("B RotateIfDue = %v, %v", changed, err)
	}
	if _, err := a.RotateIfDue(); err != nil {
		t.Fatal(err)
	}
	if !sameKeys(a, b) || len(a.KeyIDs()) != 3 {
		t.Fatalf("after the scheduled rotation: %v vs %v", a.KeyIDs(), b.KeyIDs())
	}
	// Only the signing key is stored private, and the state expires.
	raw, err := keys.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var st ringState
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	for _, k := range st.Keys {
		if strings.Contains(string(k.JWK), `"d"`) {
			t.Errorf("verification key stored private: %s", k.JWK)
		}
	}
	if !strings.Contains(string(st.Signer), `"d"`) {
		t.Error("signer stored without its private part")
	}
	if ttl := c.PTTL(ctx, DefaultRedisPrefix+"keyring").Val(); ttl <= 0 {
		t.Errorf("key ring TTL %s", ttl)
	}
	// A restarted replica adopts the ring instead of making its own.
	c2, err := NewKeyRing(KeyRingConfig{Store: keys, Now: clk.Now, RotateEvery: time.Hour, Overlap: 9 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c2.KeyIDs()[:1], a.KeyIDs()[:1]) {
		t.Fatalf("restarted ring: %v vs %v", c2.KeyIDs(), a.KeyIDs())
	}
}

// sameKeys: same signing key and same verification keys.
func sameKeys(a, b *KeyRing) bool {
	ka, kb := a.KeyIDs(), b.KeyIDs()
	if ka[0] != kb[0] {
		return false
	}
	slices.Sort(ka)
	slices.Sort(kb)
	return slices.Equal(ka, kb)
}
