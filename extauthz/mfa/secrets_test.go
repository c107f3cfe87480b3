package mfa

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/testenv"
)

func testSealer(t testing.TB) *Sealer {
	t.Helper()
	key := make([]byte, KeySize)
	_, _ = rand.Read(key)
	s, err := NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newSecrets picks the store by the subtest's name (see testenv.MemoryAndRedis); the
// clock drives the memory store, Redis expires keys itself.
func newSecrets(t *testing.T, c *clock) SecretStore {
	t.Helper()
	if !testenv.IsRedis(t) {
		return NewMemorySecrets(c.Now)
	}
	s, err := NewRedisSecrets(testenv.RedisClient(t), "", testSealer(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSecretStore(t *testing.T) { testenv.MemoryAndRedis(t, testSecretStore) }

func testSecretStore(t *testing.T) {
	ctx := context.Background()
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	s := newSecrets(t, c)
	if got, err := s.Load(ctx, "acme/alice"); err != nil || got.Secret != "" || got.Pending != "" {
		t.Fatalf("empty: %+v %v", got, err)
	}
	if err := s.Begin(ctx, "acme/alice", "FIRST", time.Minute); err != nil {
		t.Fatal(err)
	}
	first, _ := s.Load(ctx, "acme/alice")
	if first.Secret != "" || first.Pending != "FIRST" {
		t.Fatalf("pending: %+v", first)
	}
	if ok, err := s.Confirm(ctx, "acme/alice", UserSecrets{Pending: "FIRST"}); ok || err != nil {
		t.Fatalf("confirm without a Load: %v %v", ok, err)
	}
	if ok, err := s.Confirm(ctx, "acme/alice", first); !ok || err != nil {
		t.Fatalf("confirm: %v %v", ok, err)
	}
	if ok, _ := s.Confirm(ctx, "acme/alice", first); ok {
		t.Fatal("a pending enrolment was confirmed twice")
	}
	if got, _ := s.Load(ctx, "acme/alice"); got.Secret != "FIRST" || got.Pending != "" {
		t.Fatalf("enrolled: %+v", got)
	}
	// Re-enrolment keeps the enrolled secret until the new one is confirmed;
	// a newer Begin supersedes an older pending one.
	_ = s.Begin(ctx, "acme/alice", "SECOND", time.Minute)
	second, _ := s.Load(ctx, "acme/alice")
	_ = s.Begin(ctx, "acme/alice", "THIRD", time.Minute)
	if got, _ := s.Load(ctx, "acme/alice"); got.Secret != "FIRST" || got.Pending != "THIRD" {
		t.Fatalf("re-enrolling: %+v", got)
	}
	if ok, _ := s.Confirm(ctx, "acme/alice", second); ok {
		t.Fatal("a superseded enrolment was confirmed")
	}
	if got, _ := s.Load(ctx, "acme/bob"); got != (UserSecrets{}) {
		t.Fatalf("bob sees alice's secrets: %+v", got)
	}
}

func TestSecretStorePendingExpires(t *testing.T) {
	testenv.MemoryAndRedis(t, testSecretStorePendingExpires)
}

func testSecretStorePendingExpires(t *testing.T) {
	ctx := context.Background()
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	s := newSecrets(t, c)
	ttl := 200 * time.Millisecond
	if err := s.Begin(ctx, "acme/alice", "LATE", ttl); err != nil {
		t.Fatal(err)
	}
	p, _ := s.Load(ctx, "acme/alice")
	c.Add(ttl)
	time.Sleep(ttl + 50*time.Millisecond) // Redis's own clock
	if got, _ := s.Load(ctx, "acme/alice"); got.Pending != "" {
		t.Fatalf("expired enrolment still pending: %+v", got)
	}
	if ok, _ := s.Confirm(ctx, "acme/alice", p); ok {
		t.Fatal("an expired enrolment was confirmed")
	}
}

func TestSecretStoreConfirmOnce(t *testing.T) { testenv.MemoryAndRedis(t, testSecretStoreConfirmOnce) }

func testSecretStoreConfirmOnce(t *testing.T) {
	ctx := context.Background()
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	s := newSecrets(t, c)
	_ = s.Begin(ctx, "acme/alice", "ONCE", time.Minute)
	p, _ := s.Load(ctx, "acme/alice")
	var wg sync.WaitGroup
	var mu sync.Mutex
	confirmed := 0
	for range 20 {
		wg.Go(func() {
			if ok, err := s.Confirm(ctx, "acme/alice", p); ok && err == nil {
				mu.Lock()
				confirmed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if confirmed != 1 {
		t.Fatalf("confirmed %d times", confirmed)
	}
}

// In Redis the secrets are sealed: neither value holds the secret, the
// enrolled one has no TTL (expiring it would un-enrol), the pending one has.
func TestRedisSecretsAtRest(t *testing.T) {
	ctx := context.Background()
	c := testenv.RedisClient(t)
	sealer := testSealer(t)
	s, err := NewRedisSecrets(c, "", sealer)
	if err != nil {
		t.Fatal(err)
	}
	const secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
	_ = s.Begin(ctx, "acme/alice", secret, time.Minute)
	p, _ := s.Load(ctx, "acme/alice")
	if ok, err := s.Confirm(ctx, "acme/alice", p); !ok || err != nil {
		t.Fatalf("confirm: %v %v", ok, err)
	}
	_ = s.Begin(ctx, "acme/alice", secret, time.Minute)
	keys := c.Keys(ctx, "*").Val()
	if len(keys) != 2 {
		t.Fatalf("keys %q", keys)
	}
	for _, k := range keys {
		v := c.Get(ctx, k).Val()
		if strings.Contains(v, secret) || strings.Contains(strings.ToUpper(hex.EncodeToString([]byte(v))), secret) {
			t.Errorf("%s holds the secret in clear", k)
		}
		ttl := c.PTTL(ctx, k).Val()
		switch k {
		case "kailash:mfa:secret:acme/alice":
			if ttl != -1 {
				t.Errorf("%s: TTL %s, want none", k, ttl)
			}
		case "kailash:mfa:pending:acme/alice":
			if ttl <= 0 || ttl > time.Minute {
				t.Errorf("%s: TTL %s", k, ttl)
			}
		default:
			t.Errorf("unexpected key %q", k)
		}
	}
	// Copying alice's sealed secret onto mallory does not give mallory it;
	// another key cannot open it.
	raw := c.Get(ctx, "kailash:mfa:secret:acme/alice").Val()
	c.Set(ctx, "kailash:mfa:secret:acme/mallory", raw, 0)
	if _, err := s.Load(ctx, "acme/mallory"); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("copied secret: %v", err)
	}
	other, _ := NewRedisSecrets(c, "", testSealer(t))
	if _, err := other.Load(ctx, "acme/alice"); !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), "sealed with key") {
		t.Fatalf("another key: %v", err)
	}
	if _, err := NewRedisSecrets(c, "", nil); err == nil {
		t.Fatal("a Redis store without a key")
	}
}

func TestSealer(t *testing.T) {
	s := testSealer(t)
	a, err := s.Seal("acme/alice", "SECRET")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.Seal("acme/alice", "SECRET")
	if bytes.Equal(a, b) {
		t.Fatal("two seals of one secret are equal (nonce reuse)")
	}
	if got, err := s.Open("acme/alice", a); err != nil || got != "SECRET" {
		t.Fatalf("open: %q %v", got, err)
	}
	if _, err := s.Open("acme/bob", a); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("another user: %v", err)
	}
	tampered := bytes.Clone(a)
	tampered[len(tampered)-1] ^= 1
	if _, err := s.Open("acme/alice", tampered); err == nil {
		t.Fatal("tampered seal opened")
	}
	for _, bad := range [][]byte{nil, a[:10], append([]byte{2}, a[1:]...)} {
		if _, err := s.Open("acme/alice", bad); err == nil {
			t.Errorf("%x opened", bad)
		}
	}
}

func TestParseKey(t *testing.T) {
	key := make([]byte, KeySize)
	_, _ = rand.Read(key)
	for _, enc := range []string{
		base64.StdEncoding.EncodeToString(key), base64.RawURLEncoding.EncodeToString(key),
		hex.EncodeToString(key), " " + base64.StdEncoding.EncodeToString(key) + "\n",
	} {
		got, err := ParseKey(enc)
		if err != nil || !bytes.Equal(got, key) {
			t.Errorf("%q: %x %v", enc, got, err)
		}
	}
	for _, bad := range []string{"", "short", base64.StdEncoding.EncodeToString(key[:16]), "not base64 at all!"} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
	if _, err := NewSealer(key[:16]); err == nil {
		t.Error("a 16-byte key")
	}
}
