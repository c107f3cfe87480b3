package extauthz

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"github.com/kailash-gw/kailash/internal/testenv"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
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

func testConfig(t testing.TB) *config.Config {
	t.Helper()
	c := &config.Config{
		Authz:  config.Authz{GRPC: config.MustHostPort("127.0.0.1:0"), HTTP: config.MustHostPort("127.0.0.1:0"), Timeout: 2 * time.Second},
		Policy: config.Policy{Decision: config.DefaultDecision},
		Tenants: []config.Tenant{
			{ID: "acme", Domains: []string{"acme.localhost"}, Plan: "enterprise", Features: []string{"workflows", "audit"},
				JWT: config.JWT{Issuer: testIssuer, Audiences: []string{testAudience}, JWKSFile: jwksPath(t)}},
			{ID: "globex", Domains: []string{"globex.localhost"}, Plan: "team",
				JWT: config.JWT{Issuer: testIssuer, Audiences: []string{testAudience}, JWKSFile: jwksPath(t)}},
		},
	}
	c.SetDefaults()
	return c
}

func headerMap(t *testing.T, hs []*corev3.HeaderValueOption) map[string]string {
	return testenv.HeaderMap(t, hs)
}
