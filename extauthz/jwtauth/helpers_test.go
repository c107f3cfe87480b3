package jwtauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"github.com/kailash-gw/kailash/internal/testenv"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/devtoken"
)

const (
	testIssuer   = "https://dev.kailash.local"
	testAudience = "kailash"
)

// t0 is the fixed test clock.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func fixedClock() time.Time { return t0 }

func devKey(t testing.TB) jwk.Key { return testenv.DevKey(t) }

func jwksPath(testing.TB) string { return testenv.DevJWKSPath() }

func jwtConfig() config.JWT {
	return config.JWT{Issuer: testIssuer, Audiences: []string{"other", testAudience}, ClockSkew: 30 * time.Second, RolesClaim: "roles", TenantClaim: "tenant"}
}

func claims(mod func(*devtoken.Claims)) devtoken.Claims {
	c := devtoken.Claims{
		Issuer: testIssuer, Audience: []string{testAudience}, Tenant: "acme", Subject: "alice",
		Roles: []string{"business_user"}, TTL: time.Hour, Now: t0.Add(-time.Minute),
		Extra: map[string]any{"department": "finance", "clearance": 3, "groups": []string{"g1"}},
	}
	if mod != nil {
		mod(&c)
	}
	return c
}

func mint(t testing.TB, key jwk.Key, c devtoken.Claims) string {
	t.Helper()
	s, err := devtoken.Mint(key, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func b64json(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b64url(b)
}

// craft builds a token by hand: header and claims as given, signature from sign.
func craft(t testing.TB, header, claims map[string]any, sign func(signingInput []byte) []byte) string {
	t.Helper()
	in := b64json(t, header) + "." + b64json(t, claims)
	return in + "." + b64url(sign([]byte(in)))
}

func validClaims() map[string]any {
	return map[string]any{"iss": testIssuer, "aud": testAudience, "sub": "alice", "tenant": "acme",
		"iat": t0.Add(-time.Minute).Unix(), "exp": t0.Add(time.Hour).Unix()}
}

func hmacSign(secret []byte) func([]byte) []byte {
	return func(in []byte) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write(in)
		return m.Sum(nil)
	}
}

// otherKey is a fresh P-256 key carrying kid.
func otherKey(t testing.TB, kid string) jwk.Key {
	t.Helper()
	pk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := jwk.FromRaw(pk)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Set(jwk.KeyIDKey, kid); err != nil {
		t.Fatal(err)
	}
	return k
}
