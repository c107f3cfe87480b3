package jwtauth

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/internal/devtoken"
)

func newTestVerifier(t testing.TB, size int, now func() time.Time) *Verifier {
	t.Helper()
	keys, err := FileKeys(jwksPath(t))
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier("acme", jwtConfig(), keys, VerifierOptions{Now: now, CacheSize: size})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyReasons(t *testing.T) {
	key := devKey(t)
	kid := key.KeyID()
	pubJWKS, err := os.ReadFile(jwksPath(t))
	if err != nil {
		t.Fatal(err)
	}
	payloadSigned := func(payload string) string {
		b, err := jws.Sign([]byte(payload), jws.WithKey(jwa.ES256, key))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	cases := []struct {
		name  string
		token string
		want  envoyauth.Reason // "" = valid
	}{
		{"valid", mint(t, key, claims(nil)), ""},
		{"valid within clock skew after exp", mint(t, key, claims(func(c *devtoken.Claims) { c.Now = t0.Add(-time.Hour - 20*time.Second) })), ""},
		{"missing token", "", envoyauth.ReasonMissingToken},
		{"one segment", "abc", envoyauth.ReasonMalformed},
		{"two segments", "abc.def", envoyauth.ReasonMalformed},
		{"four segments", "a.b.c.d", envoyauth.ReasonMalformed},
		{"header not base64", "!!!.e30.AA", envoyauth.ReasonMalformed},
		{"header not JSON", b64url([]byte("nope")) + ".e30.AA", envoyauth.ReasonMalformed},
		{"claims not JSON", payloadSigned("not json"), envoyauth.ReasonMalformed},
		{"missing exp", craftES(t, key, func(c map[string]any) { delete(c, "exp") }), envoyauth.ReasonMalformed},
		{"missing sub", craftES(t, key, func(c map[string]any) { delete(c, "sub") }), envoyauth.ReasonMalformed},
		{"exp not a number", craftES(t, key, func(c map[string]any) { c["exp"] = "tomorrow" }), envoyauth.ReasonMalformed},
		{"alg none", craft(t, map[string]any{"alg": "none", "typ": "JWT"}, validClaims(), func([]byte) []byte { return nil }), envoyauth.ReasonAlgNone},
		{"alg NoNe", craft(t, map[string]any{"alg": "NoNe"}, validClaims(), func([]byte) []byte { return nil }), envoyauth.ReasonAlgNone},
		{"alg missing", craft(t, map[string]any{"kid": kid}, validClaims(), func([]byte) []byte { return []byte("x") }), envoyauth.ReasonAlgNone},
		{"HS256 with the public JWKS as secret", craft(t, map[string]any{"alg": "HS256", "kid": kid}, validClaims(), hmacSign(pubJWKS)), envoyauth.ReasonAlgNotAllowed},
		{"ES384 header on a P-256 key", craft(t, map[string]any{"alg": "ES384", "kid": kid}, validClaims(), func([]byte) []byte { return make([]byte, 96) }), envoyauth.ReasonAlgNotAllowed},
		{"RS256 header on an EC key", craft(t, map[string]any{"alg": "RS256", "kid": kid}, validClaims(), func([]byte) []byte { return make([]byte, 256) }), envoyauth.ReasonAlgNotAllowed},
		{"EdDSA header on an EC key", craft(t, map[string]any{"alg": "EdDSA", "kid": kid}, validClaims(), func([]byte) []byte { return make([]byte, 64) }), envoyauth.ReasonAlgNotAllowed},
		{"crit header", craft(t, map[string]any{"alg": "ES256", "kid": kid, "crit": []string{"exp"}}, validClaims(), func([]byte) []byte { return make([]byte, 64) }), envoyauth.ReasonMalformed},
		{"unknown kid", mint(t, otherKey(t, "someone-else"), claims(nil)), envoyauth.ReasonUnknownKID},
		{"bad signature (another key, same kid)", mint(t, otherKey(t, kid), claims(nil)), envoyauth.ReasonBadSignature},
		{"tampered claims", tamper(t, mint(t, key, claims(nil))), envoyauth.ReasonBadSignature},
		{"expired", mint(t, key, claims(func(c *devtoken.Claims) { c.Now = t0.Add(-2 * time.Hour) })), envoyauth.ReasonExpired},
		{"nbf in the future", mint(t, key, claims(func(c *devtoken.Claims) { c.Now = t0.Add(time.Hour) })), envoyauth.ReasonNotYetValid},
		{"iat in the future", craftES(t, key, func(c map[string]any) { c["iat"] = t0.Add(10 * time.Minute).Unix() }), envoyauth.ReasonNotYetValid},
		{"wrong issuer", mint(t, key, claims(func(c *devtoken.Claims) { c.Issuer = "https://evil.example" })), envoyauth.ReasonWrongIssuer},
		{"wrong audience", mint(t, key, claims(func(c *devtoken.Claims) { c.Audience = []string{"someone"} })), envoyauth.ReasonWrongAudience},
		{"no audience", craftES(t, key, func(c map[string]any) { delete(c, "aud") }), envoyauth.ReasonWrongAudience},
		{"wrong tenant", mint(t, key, claims(func(c *devtoken.Claims) { c.Tenant = "globex" })), envoyauth.ReasonWrongTenant},
		{"tenant not a string", craftES(t, key, func(c map[string]any) { c["tenant"] = 7 }), envoyauth.ReasonWrongTenant},
		{"no tenant claim is fine", mint(t, key, claims(func(c *devtoken.Claims) { c.Tenant = "" })), ""},
	}
	v := newTestVerifier(t, -1, fixedClock)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id, err := v.Verify(t.Context(), c.token)
			if c.want == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				if id.Subject != "alice" || id.Tenant != "acme" || id.Method != "jwt" {
					t.Fatalf("identity %+v", id)
				}
				return
			}
			var ae *envoyauth.AuthError
			if !errors.As(err, &ae) {
				t.Fatalf("want envoyauth.AuthError %s, got %v", c.want, err)
			}
			if ae.Reason != c.want {
				t.Fatalf("reason = %s (%s), want %s", ae.Reason, ae.Detail, c.want)
			}
			if c.token != "" && len(c.token) > 20 && strings.Contains(ae.Error(), c.token) {
				t.Fatal("error contains the token")
			}
		})
	}
}

// With require_tenant_claim a token must carry the tenant claim (named by
// tenant_claim); a wrong tenant keeps its own reason.
func TestVerifyRequireTenantClaim(t *testing.T) {
	keys, err := FileKeys(jwksPath(t))
	if err != nil {
		t.Fatal(err)
	}
	on := true
	cfg := jwtConfig()
	cfg.RequireTenantClaim = &on
	cfg.TenantClaim = "org"
	v, err := NewVerifier("acme", cfg, keys, VerifierOptions{Now: fixedClock, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	key := devKey(t)
	for _, c := range []struct {
		name  string
		token string
		want  envoyauth.Reason
	}{
		{"no tenant claim", craftES(t, key, func(c map[string]any) { delete(c, "tenant") }), envoyauth.ReasonMissingTenantClaim},
		{"tenant under another name", craftES(t, key, func(c map[string]any) { c["tenant"] = "acme" }), envoyauth.ReasonMissingTenantClaim},
		{"wrong tenant", craftES(t, key, func(c map[string]any) { c["org"] = "globex" }), envoyauth.ReasonWrongTenant},
		{"right tenant", craftES(t, key, func(c map[string]any) { c["org"] = "acme" }), ""},
	} {
		_, err := v.Verify(t.Context(), c.token)
		var ae *envoyauth.AuthError
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (!errors.As(err, &ae) || ae.Reason != c.want):
			t.Errorf("%s: %v, want %s", c.name, err, c.want)
		}
	}
}

// craftES signs hand-made claims (validClaims modified by mod) with key.
func craftES(t *testing.T, key jwk.Key, mod func(map[string]any)) string {
	t.Helper()
	c := validClaims()
	mod(c)
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	b, err := jws.Sign(payload, jws.WithKey(jwa.ES256, key))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func tamper(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	c := validClaims()
	c["roles"] = []string{"admin"}
	parts[1] = b64json(t, c)
	return strings.Join(parts, ".")
}

func TestIdentityClaims(t *testing.T) {
	v := newTestVerifier(t, -1, fixedClock)
	id, err := v.Verify(t.Context(), mint(t, devKey(t), claims(nil)))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(id.Roles, ",") != "business_user" || strings.Join(id.Groups, ",") != "g1" {
		t.Fatalf("roles %v groups %v", id.Roles, id.Groups)
	}
	if id.Attributes["department"] != "finance" || id.Attributes["clearance"] == nil {
		t.Fatalf("attributes %v", id.Attributes)
	}
	for _, k := range []string{"iss", "sub", "aud", "exp", "nbf", "iat", "roles", "tenant", "groups"} {
		if _, ok := id.Attributes[k]; ok {
			t.Errorf("attributes hold %q", k)
		}
	}
	if !id.ExpiresAt.Equal(t0.Add(-time.Minute).Add(time.Hour).Truncate(time.Second)) {
		t.Fatalf("exp %v", id.ExpiresAt)
	}
}

// swapKeys is a KeySource whose set the test can replace.
type swapKeys struct {
	mu  sync.Mutex
	set jwk.Set
}

func (s *swapKeys) Keys(context.Context) (jwk.Set, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.set, nil
}

func TestTokenCache(t *testing.T) {
	now := t0
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	file, err := FileKeys(jwksPath(t))
	if err != nil {
		t.Fatal(err)
	}
	keys := &swapKeys{set: file.Set}
	v, err := NewVerifier("acme", jwtConfig(), keys, VerifierOptions{Now: clock, CacheSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	key := devKey(t)
	tok := mint(t, key, claims(func(c *devtoken.Claims) { c.TTL = 10 * time.Minute }))
	id1, err := v.Verify(t.Context(), tok)
	if err != nil {
		t.Fatal(err)
	}
	id2, err := v.Verify(t.Context(), tok)
	if err != nil || id1 != id2 {
		t.Fatalf("second verify not served from the cache: %v", err)
	}
	if v.cache.len() != 1 {
		t.Fatalf("cache len %d", v.cache.len())
	}
	// Bounded.
	for i := range 3 {
		_, err := v.Verify(t.Context(), mint(t, key, claims(func(c *devtoken.Claims) { c.Subject = "u" + string(rune('a'+i)) })))
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := v.cache.len(); n > 2 {
		t.Fatalf("cache grew to %d", n)
	}
	// An entry is never served past the token's exp (5m cap, then exp).
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	advance(10 * time.Minute)
	var ae *envoyauth.AuthError
	if _, err := v.Verify(t.Context(), tok); !errors.As(err, &ae) || ae.Reason != envoyauth.ReasonExpired {
		t.Fatalf("after exp: %v", err)
	}
	// New keys clear the cache: a token signed by a key no longer trusted fails.
	tok2 := mint(t, key, claims(nil))
	if _, err := v.Verify(t.Context(), tok2); err != nil {
		t.Fatal(err)
	}
	other := jwk.NewSet()
	pub, _ := otherKey(t, "rotated").PublicKey()
	_ = other.AddKey(pub)
	keys.mu.Lock()
	keys.set = other
	keys.mu.Unlock()
	if _, err := v.Verify(t.Context(), tok2); !errors.As(err, &ae) || ae.Reason != envoyauth.ReasonUnknownKID {
		t.Fatalf("after key rotation: %v", err)
	}
}

func TestNoKidWithSingleKey(t *testing.T) {
	key := devKey(t)
	anon, err := jwk.FromRaw(mustRaw(t, key))
	if err != nil {
		t.Fatal(err)
	}
	tok := mint(t, anon, claims(nil)) // no kid in the header
	v := newTestVerifier(t, -1, fixedClock)
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("single-key set, no kid: %v", err)
	}
}

func mustRaw(t *testing.T, k jwk.Key) any {
	t.Helper()
	var raw any
	if err := k.Raw(&raw); err != nil {
		t.Fatal(err)
	}
	return raw
}

// A request whose context is already cancelled must not leave a broken key
// ring behind for the next one.
func TestCancelledVerifyDoesNotPoisonKeys(t *testing.T) {
	v := newTestVerifier(t, -1, fixedClock)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	tok := mint(t, devKey(t), claims(nil))
	_, _ = v.Verify(ctx, tok)
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkVerify(b *testing.B) {
	for _, bc := range []struct {
		name  string
		cache int
	}{{"cache", 0}, {"no-cache", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			v := newTestVerifier(b, bc.cache, fixedClock)
			tok := mint(b, devKey(b), claims(nil))
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
