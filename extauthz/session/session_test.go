package session

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/kailash-gw/kailash/internal/testenv"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	m     *Manager
	ring  *KeyRing
	clk   *clock
	store Store
}

func newFixture(t testing.TB, cfg Config, rc KeyRingConfig) *fixture {
	t.Helper()
	clk := &clock{t: time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)}
	rc.Now = clk.Now
	ring, err := NewKeyRing(rc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Issuer == "" {
		cfg.Issuer = "https://kailash.test/auth"
	}
	if cfg.Audience == nil {
		cfg.Audience = []string{"kailash"}
	}
	cfg.Now = clk.Now
	store := newStore(t)
	m, err := NewManager(cfg, ring, store)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{m: m, ring: ring, clk: clk, store: store}
}

var alice = Identity{
	Subject: "alice", Tenant: "acme", Roles: []string{"admin", "engineer"},
	Groups:     []string{"cn=admins,ou=groups,dc=example,dc=com"},
	Attributes: map[string]string{"department": "engineering", "clearance": "secret", "location": "Zurich"},
	Method:     "ldap", AMR: []string{"pwd", "otp"},
}

func (f *fixture) issue(t *testing.T, id Identity) *Tokens {
	t.Helper()
	tok, err := f.m.Issue(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
}

func TestIssueVerify(t *testing.T) { testenv.MemoryAndRedis(t, testIssueVerify) }

func testIssueVerify(t *testing.T) {
	f := newFixture(t, Config{}, KeyRingConfig{})
	tok := f.issue(t, alice)
	if tok.AccessExpiresAt != f.clk.Now().Add(8*time.Hour) || tok.RefreshExpiresAt != f.clk.Now().Add(30*24*time.Hour) {
		t.Errorf("lifetimes: access %s, refresh %s", tok.AccessExpiresAt, tok.RefreshExpiresAt)
	}
	if strings.Contains(tok.String(), tok.AccessToken) || strings.Contains(tok.String(), tok.RefreshToken) {
		t.Error("Tokens.String prints a token")
	}
	c, err := f.m.Verify(context.Background(), tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "alice" || c.Tenant != "acme" || c.SessionID != tok.SessionID || c.Method != "ldap" ||
		!slices.Equal(c.Roles, alice.Roles) || !slices.Equal(c.Groups, alice.Groups) || !slices.Equal(c.AMR, alice.AMR) {
		t.Errorf("claims = %+v", c)
	}
	if len(c.Attributes) != 3 || c.Attributes["clearance"] != "secret" {
		t.Errorf("attributes = %v", c.Attributes)
	}
	// Cached path gives the same answer.
	c2, err := f.m.Verify(context.Background(), tok.AccessToken)
	if err != nil || c2.SessionID != c.SessionID {
		t.Fatalf("second verify: %v", err)
	}

	// A standard JOSE library verifies it with our JWKS: the runner and
	// extauthz's JWT verifier can trust these tokens the same way.
	set, err := jwk.Parse(f.ring.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.Parse([]byte(tok.AccessToken), jwt.WithKeySet(set), jwt.WithClock(jwt.ClockFunc(f.clk.Now)),
		jwt.WithIssuer("https://kailash.test/auth"), jwt.WithAudience("kailash"))
	if err != nil {
		t.Fatalf("jwx verify with our JWKS: %v", err)
	}
	if d, _ := parsed.Get("department"); d != "engineering" {
		t.Errorf("department claim = %v", d)
	}
}

func TestIssueRejectsReservedAttribute(t *testing.T) {
	testenv.MemoryAndRedis(t, testIssueRejectsReservedAttribute)
}

func testIssueRejectsReservedAttribute(t *testing.T) {
	f := newFixture(t, Config{}, KeyRingConfig{})
	id := alice
	id.Attributes = map[string]string{"tenant": "other"}
	if _, err := f.m.Issue(context.Background(), id); err == nil {
		t.Fatal("an attribute overrode the tenant claim")
	}
}

func TestVerifyRejects(t *testing.T) { testenv.MemoryAndRedis(t, testVerifyRejects) }

func testVerifyRejects(t *testing.T) {
	f := newFixture(t, Config{}, KeyRingConfig{})
	good := f.issue(t, alice).AccessToken
	parts := strings.Split(good, ".")
	enc := base64.RawURLEncoding.EncodeToString
	var hdr map[string]any
	b, _ := base64.RawURLEncoding.DecodeString(parts[0])
	_ = json.Unmarshal(b, &hdr)
	withHeader := func(k string, v any) string {
		h := map[string]any{}
		for kk, vv := range hdr {
			h[kk] = vv
		}
		h[k] = v
		hb, _ := json.Marshal(h)
		return enc(hb) + "." + parts[1] + "." + parts[2]
	}
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := strings.Replace(string(payload), `"roles":["admin","engineer"]`, `"roles":["superuser"]`, 1)

	other := newFixture(t, Config{}, KeyRingConfig{}) // same claims, another key
	foreign := other.issue(t, alice).AccessToken
	wrongIss := newFixture(t, Config{Issuer: "https://evil"}, KeyRingConfig{})
	wrongIss.m.keys = f.ring // signed with our key, wrong issuer
	wrongIssTok := wrongIss.issue(t, alice).AccessToken
	wrongAud := newFixture(t, Config{Audience: []string{"other"}}, KeyRingConfig{})
	wrongAud.m.keys = f.ring
	wrongAudTok := wrongAud.issue(t, alice).AccessToken

	for name, tok := range map[string]string{
		"empty":            "",
		"garbage":          "not.a.jwt",
		"two parts":        parts[0] + "." + parts[1],
		"four parts":       good + ".x",
		"alg none":         withHeader("alg", "none")[:len(parts[0])] + "." + parts[1] + ".",
		"alg none full":    withHeader("alg", "none"),
		"alg HS256":        withHeader("alg", "HS256"),
		"alg ES384":        withHeader("alg", "ES384"),
		"unknown kid":      withHeader("kid", "nope"),
		"crit":             withHeader("crit", []string{"exp"}),
		"tampered payload": parts[0] + "." + enc([]byte(tampered)) + "." + parts[2],
		"bad signature":    parts[0] + "." + parts[1] + "." + enc(make([]byte, 64)),
		"other key":        foreign,
		"wrong issuer":     wrongIssTok,
		"wrong audience":   wrongAudTok,
		"too long":         good + strings.Repeat("A", 9000),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := f.m.Verify(context.Background(), tok)
			wantErr(t, err, ErrInvalidToken)
		})
	}
}

func TestAccessTokenExpiry(t *testing.T) { testenv.MemoryAndRedis(t, testAccessTokenExpiry) }

func testAccessTokenExpiry(t *testing.T) {
	f := newFixture(t, Config{IdleTimeout: -1}, KeyRingConfig{})
	tok := f.issue(t, alice)
	ctx := context.Background()
	f.clk.Add(8*time.Hour - time.Second)
	if _, err := f.m.Verify(ctx, tok.AccessToken); err != nil {
		t.Fatalf("just before expiry: %v", err)
	}
	f.clk.Add(time.Second + 30*time.Second) // past exp and the clock skew
	_, err := f.m.Verify(ctx, tok.AccessToken)
	wantErr(t, err, ErrExpired)
	// The session lives on: refresh gives a new access token.
	next, err := f.m.Refresh(ctx, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Verify(ctx, next.AccessToken); err != nil {
		t.Fatal(err)
	}
}

func TestRefreshRotation(t *testing.T) { testenv.MemoryAndRedis(t, testRefreshRotation) }

func testRefreshRotation(t *testing.T) {
	f := newFixture(t, Config{}, KeyRingConfig{})
	ctx := context.Background()
	t1 := f.issue(t, alice)
	f.clk.Add(10 * time.Minute)
	t2, err := f.m.Refresh(ctx, t1.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if t2.RefreshToken == t1.RefreshToken || t2.AccessToken == t1.AccessToken || t2.SessionID != t1.SessionID {
		t.Fatal("refresh did not rotate")
	}
	c, err := f.m.Verify(ctx, t2.AccessToken)
	if err != nil || c.Attributes["department"] != "engineering" {
		t.Fatalf("refreshed token: %v %+v", err, c)
	}
	t3, err := f.m.Refresh(ctx, t2.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	// The session's absolute end does not move.
	if !t3.RefreshExpiresAt.Equal(t1.RefreshExpiresAt) {
		t.Errorf("refresh extended the session: %s → %s", t1.RefreshExpiresAt, t3.RefreshExpiresAt)
	}
	_, err = f.m.Refresh(ctx, "short")
	wantErr(t, err, ErrInvalidRefresh)
	_, err = f.m.Refresh(ctx, randomID(32))
	wantErr(t, err, ErrInvalidRefresh)
}

func TestRefreshReuseRevokesSession(t *testing.T) {
	testenv.MemoryAndRedis(t, testRefreshReuseRevokesSession)
}

func testRefreshReuseRevokesSession(t *testing.T) {
	f := newFixture(t, Config{}, KeyRingConfig{})
	ctx := context.Background()
	t1 := f.issue(t, alice)
	t2, err := f.m.Refresh(ctx, t1.RefreshToken) // the legitimate client
	if err != nil {
		t.Fatal(err)
	}
	// Someone replays the spent token: the whole family dies.
	_, err = f.m.Refresh(ctx, t1.RefreshToken)
	wantErr(t, err, ErrRefreshReused)
	_, err = f.m.Refresh(ctx, t2.RefreshToken)
	wantErr(t, err, ErrInvalidRefresh)
	for _, at := range []string{t1.AccessToken, t2.AccessToken} {
		_, err = f.m.Verify(ctx, at)
		wantErr(t, err, ErrRevoked)
	}
	// Other sessions of the user are untouched.
	other := f.issue(t, alice)
	if _, err := f.m.Verify(ctx, other.AccessToken); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentRefreshOnlyOneWins(t *testing.T) {
	testenv.MemoryAndRedis(t, testConcurrentRefreshOnlyOneWins)
}

func testConcurrentRefreshOnlyOneWins(t *testing.T) {
	f := newFixture(t, Config{}, KeyRingConfig{})
	tok := f.issue(t, alice)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 10 {
		wg.Go(func() {
			if _, err := f.m.Refresh(context.Background(), tok.RefreshToken); err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if ok > 1 {
		t.Fatalf("%d refreshes with one token succeeded", ok)
	}
}

func TestSessionLimit(t *testing.T) { testenv.MemoryAndRedis(t, testSessionLimit) }

func testSessionLimit(t *testing.T) {
	ctx := context.Background()
	t.Run("refuse new", func(t *testing.T) {
		f := newFixture(t, Config{MaxSessions: 2, OnLimit: RefuseNew}, KeyRingConfig{})
		s1 := f.issue(t, alice)
		f.issue(t, alice)
		_, err := f.m.Issue(ctx, alice)
		wantErr(t, err, ErrTooManySessions)
		// Another user and another tenant have their own budget.
		bob := alice
		bob.Subject = "bob"
		f.issue(t, bob)
		otherTenant := alice
		otherTenant.Tenant = "globex"
		f.issue(t, otherTenant)
		// Logging out frees a slot.
		if err := f.m.Logout(ctx, s1.AccessToken); err != nil {
			t.Fatal(err)
		}
		f.issue(t, alice)
	})
	t.Run("evict oldest", func(t *testing.T) {
		f := newFixture(t, Config{MaxSessions: 2, OnLimit: EvictOldest}, KeyRingConfig{})
		s1 := f.issue(t, alice)
		f.clk.Add(time.Second)
		s2 := f.issue(t, alice)
		f.clk.Add(time.Second)
		s3 := f.issue(t, alice)
		_, err := f.m.Verify(ctx, s1.AccessToken)
		wantErr(t, err, ErrRevoked)
		_, err = f.m.Refresh(ctx, s1.RefreshToken)
		wantErr(t, err, ErrInvalidRefresh)
		for _, s := range []*Tokens{s2, s3} {
			if _, err := f.m.Verify(ctx, s.AccessToken); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("idle sessions do not count", func(t *testing.T) {
		f := newFixture(t, Config{MaxSessions: 1, IdleTimeout: 30 * time.Minute}, KeyRingConfig{})
		f.issue(t, alice)
		f.clk.Add(31 * time.Minute)
		f.issue(t, alice)
	})
}

func TestIdleTimeout(t *testing.T) { testenv.MemoryAndRedis(t, testIdleTimeout) }

func testIdleTimeout(t *testing.T) {
	f := newFixture(t, Config{IdleTimeout: 30 * time.Minute}, KeyRingConfig{})
	ctx := context.Background()
	tok := f.issue(t, alice)
	for range 4 { // used every 20 minutes: stays alive past the idle timeout
		f.clk.Add(20 * time.Minute)
		if _, err := f.m.Verify(ctx, tok.AccessToken); err != nil {
			t.Fatalf("active session: %v", err)
		}
	}
	f.clk.Add(31 * time.Minute)
	_, err := f.m.Verify(ctx, tok.AccessToken)
	wantErr(t, err, ErrIdle)
	_, err = f.m.Verify(ctx, tok.AccessToken)
	wantErr(t, err, ErrRevoked)
	_, err = f.m.Refresh(ctx, tok.RefreshToken)
	wantErr(t, err, ErrInvalidRefresh)

	// Idle detected at refresh time too.
	tok2 := f.issue(t, alice)
	f.clk.Add(31 * time.Minute)
	_, err = f.m.Refresh(ctx, tok2.RefreshToken)
	wantErr(t, err, ErrIdle)
}

// Activity seen by one replica reaches the store, so another replica (or a
// restart) with the same store does not find the session idle.
func TestActivityIsPersisted(t *testing.T) { testenv.MemoryAndRedis(t, testActivityIsPersisted) }

func testActivityIsPersisted(t *testing.T) {
	f := newFixture(t, Config{IdleTimeout: 30 * time.Minute}, KeyRingConfig{})
	ctx := context.Background()
	tok := f.issue(t, alice)
	f.clk.Add(20 * time.Minute)
	if _, err := f.m.Verify(ctx, tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	replica, err := NewManager(f.m.cfg, f.ring, f.store)
	if err != nil {
		t.Fatal(err)
	}
	f.clk.Add(20 * time.Minute) // 40 min after login, 20 after last use
	if _, err := replica.Verify(ctx, tok.AccessToken); err != nil {
		t.Fatalf("replica: %v", err)
	}
	// A revocation on one replica is seen by another through the store
	// (until it has the session tracked; a shared revocation feed is the
	// Redis store's job).
	other := f.issue(t, alice)
	if err := f.m.Revoke(ctx, other.SessionID); err != nil {
		t.Fatal(err)
	}
	_, err = replica.Verify(ctx, other.AccessToken)
	wantErr(t, err, ErrRevoked)
}

func TestAbsoluteSessionLifetime(t *testing.T) {
	testenv.MemoryAndRedis(t, testAbsoluteSessionLifetime)
}

func testAbsoluteSessionLifetime(t *testing.T) {
	f := newFixture(t, Config{AccessTTL: time.Hour, RefreshTTL: 3 * time.Hour, IdleTimeout: -1}, KeyRingConfig{Overlap: time.Hour})
	ctx := context.Background()
	tok := f.issue(t, alice)
	for range 2 {
		f.clk.Add(59 * time.Minute)
		var err error
		if tok, err = f.m.Refresh(ctx, tok.RefreshToken); err != nil {
			t.Fatal(err)
		}
	}
	// The last access token is cut to the session's end.
	if !tok.AccessExpiresAt.Equal(tok.RefreshExpiresAt) && tok.AccessExpiresAt.After(tok.RefreshExpiresAt) {
		t.Errorf("access token outlives the session")
	}
	f.clk.Add(time.Hour + 5*time.Minute)
	_, err := f.m.Refresh(ctx, tok.RefreshToken)
	wantErr(t, err, ErrSessionExpired)
}

func TestLogoutRevokes(t *testing.T) { testenv.MemoryAndRedis(t, testLogoutRevokes) }

func testLogoutRevokes(t *testing.T) {
	f := newFixture(t, Config{}, KeyRingConfig{})
	ctx := context.Background()
	tok := f.issue(t, alice)
	if _, err := f.m.Verify(ctx, tok.AccessToken); err != nil {
		t.Fatal(err) // now cached and tracked: revocation must still win
	}
	if err := f.m.Logout(ctx, tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	_, err := f.m.Verify(ctx, tok.AccessToken)
	wantErr(t, err, ErrRevoked)
	_, err = f.m.Refresh(ctx, tok.RefreshToken)
	wantErr(t, err, ErrInvalidRefresh)
	if err := f.m.Logout(ctx, tok.AccessToken); err != nil {
		t.Fatalf("second logout: %v", err)
	}
	wantErr(t, f.m.Logout(ctx, "garbage"), ErrInvalidToken)
}

func TestKeyRotation(t *testing.T) { testenv.MemoryAndRedis(t, testKeyRotation) }

func testKeyRotation(t *testing.T) {
	f := newFixture(t, Config{AccessTTL: time.Hour, IdleTimeout: -1},
		KeyRingConfig{RotateEvery: 24 * time.Hour, Overlap: 2 * time.Hour})
	ctx := context.Background()
	f.issue(t, alice)
	oldKID := f.ring.KeyIDs()[0]

	f.clk.Add(24*time.Hour - time.Second)
	if rotated, err := f.ring.RotateIfDue(); err != nil || rotated {
		t.Fatalf("rotated early: %v %v", rotated, err)
	}
	old := f.issue(t, alice) // signed by the old key just before rotation
	f.clk.Add(time.Second)
	if rotated, err := f.ring.RotateIfDue(); err != nil || !rotated {
		t.Fatalf("not rotated on schedule: %v %v", rotated, err)
	}
	ids := f.ring.KeyIDs()
	if len(ids) != 2 || ids[0] == oldKID || ids[1] != oldKID {
		t.Fatalf("key ids after rotation = %v (old %s)", ids, oldKID)
	}
	var jwks struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(f.ring.JWKS(), &jwks); err != nil || len(jwks.Keys) != 2 {
		t.Fatalf("JWKS = %s", f.ring.JWKS())
	}
	for _, k := range jwks.Keys {
		if _, private := k["d"]; private {
			t.Fatal("JWKS contains a private key")
		}
		if k["alg"] != "ES256" || k["use"] != "sig" {
			t.Errorf("JWKS key = %v", k)
		}
	}
	fresh := f.issue(t, alice)
	if kidOf(t, fresh.AccessToken) != ids[0] || kidOf(t, old.AccessToken) != oldKID {
		t.Fatal("tokens not signed by the expected keys")
	}
	// The old key keeps verifying during the overlap.
	f.clk.Add(59 * time.Minute)
	for _, tok := range []*Tokens{old, fresh} {
		if _, err := f.m.Verify(ctx, tok.AccessToken); err != nil {
			t.Fatalf("during overlap: %v", err)
		}
	}
	// After the overlap the old key is gone from the ring and the JWKS, even
	// for a token that is cached.
	f.clk.Add(61 * time.Minute)
	if changed, err := f.ring.RotateIfDue(); err != nil || !changed {
		t.Fatalf("prune: %v %v", changed, err)
	}
	if ids := f.ring.KeyIDs(); len(ids) != 1 {
		t.Fatalf("key ids after overlap = %v", ids)
	}
	if _, _, err := f.m.parse(context.Background(), old.AccessToken); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("old key still verifies: %v", err)
	}
	if c := f.m.cache.get(sha256Of(old.AccessToken), f.ring); c != nil {
		t.Fatal("cache serves a token of a retired key")
	}
}

func TestRotateDropsKeysPastOverlap(t *testing.T) {
	testenv.MemoryAndRedis(t, testRotateDropsKeysPastOverlap)
}

func testRotateDropsKeysPastOverlap(t *testing.T) {
	f := newFixture(t, Config{AccessTTL: time.Hour}, KeyRingConfig{Overlap: time.Hour})
	for range 3 {
		if err := f.ring.Rotate(); err != nil {
			t.Fatal(err)
		}
		f.clk.Add(2 * time.Hour)
	}
	if err := f.ring.Rotate(); err != nil {
		t.Fatal(err)
	}
	if ids := f.ring.KeyIDs(); len(ids) != 2 {
		t.Fatalf("ring kept %d keys", len(ids))
	}
}

func TestRS256(t *testing.T) { testenv.MemoryAndRedis(t, testRS256) }

func testRS256(t *testing.T) {
	f := newFixture(t, Config{}, KeyRingConfig{Algorithm: "RS256"})
	tok := f.issue(t, alice)
	if _, err := f.m.Verify(context.Background(), tok.AccessToken); err != nil {
		t.Fatal(err)
	}
}

func TestNewManagerValidates(t *testing.T) {
	ring, _ := NewKeyRing(KeyRingConfig{Overlap: time.Hour})
	for name, cfg := range map[string]Config{
		"no issuer":             {Audience: []string{"a"}},
		"no audience":           {Issuer: "i"},
		"overlap < access TTL":  {Issuer: "i", Audience: []string{"a"}, AccessTTL: 2 * time.Hour},
		"access > refresh":      {Issuer: "i", Audience: []string{"a"}, AccessTTL: time.Hour, RefreshTTL: time.Minute},
		"negative max sessions": {Issuer: "i", Audience: []string{"a"}, AccessTTL: time.Hour, MaxSessions: -1},
	} {
		if _, err := NewManager(cfg, ring, NewMemoryStore()); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
	if _, err := NewKeyRing(KeyRingConfig{Algorithm: "HS256"}); err == nil {
		t.Error("HS256 key ring accepted")
	}
}

func TestConcurrentUse(t *testing.T) { testenv.MemoryAndRedis(t, testConcurrentUse) }

func testConcurrentUse(t *testing.T) {
	f := newFixture(t, Config{MaxSessions: 3, OnLimit: EvictOldest}, KeyRingConfig{})
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 20 {
				tok, err := f.m.Issue(ctx, alice)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = f.m.Verify(ctx, tok.AccessToken)
				if (i+j)%3 == 0 {
					_, _ = f.m.Refresh(ctx, tok.RefreshToken)
				}
				if (i+j)%5 == 0 {
					_ = f.ring.Rotate()
				}
			}
		})
	}
	wg.Wait()
}

func kidOf(t *testing.T, tok string) string {
	t.Helper()
	b, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	var h header
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	return h.Kid
}
