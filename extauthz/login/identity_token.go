package login

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/extauthz/session"
	"github.com/kailash-gw/kailash/internal/wire"
)

// identityMinter signs x-kailash-identity tokens (wire.HeaderIdentity), the
// short-lived JWT for the upstream (the runner verifies it against
// /auth/.well-known/jwks.json). Signing (ES256 ~170 µs) is
// too dear for every Check, so a token is reused for the same identity until
// half its lifetime has passed; the cache is keyed by everything the token
// says plus the signing key, so a key rotation mints afresh.
type identityMinter struct {
	ring     *session.KeyRing
	issuer   string
	audience string
	ttl      time.Duration
	now      func() time.Time

	mu    sync.Mutex // guards cache
	cache map[[32]byte]mintedToken
}

type mintedToken struct {
	token   string
	renewAt time.Time
}

const identityCacheMax = 8192

func newIdentityMinter(ring *session.KeyRing, issuer, audience string, ttl time.Duration, now func() time.Time) *identityMinter {
	return &identityMinter{ring: ring, issuer: issuer, audience: audience, ttl: ttl, now: now, cache: map[[32]byte]mintedToken{}}
}

// Token returns a signed identity token for id in tenant.
func (m *identityMinter) Token(tenant string, id *envoyauth.Identity) (string, error) {
	now := m.now()
	key := m.key(tenant, id)
	m.mu.Lock()
	if t, ok := m.cache[key]; ok && now.Before(t.renewAt) {
		m.mu.Unlock()
		return t.token, nil
	}
	m.mu.Unlock()

	roles := id.Roles
	if roles == nil {
		roles = []string{}
	}
	c := map[string]any{"iss": m.issuer, "aud": m.audience, "sub": id.Subject, wire.ClaimTenant: tenant, wire.ClaimRoles: roles,
		"iat": now.Unix(), "nbf": now.Add(-time.Second).Unix(), "exp": now.Add(m.ttl).Unix()}
	if len(id.Groups) > 0 {
		c[wire.ClaimGroups] = id.Groups
	}
	if id.Method != "" {
		c[wire.ClaimMethod] = id.Method
	}
	if len(id.Attributes) > 0 {
		c[wire.ClaimAttributes] = id.Attributes
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	tok, err := m.ring.Sign(payload)
	if err != nil {
		return "", err
	}
	m.mu.Lock()
	if len(m.cache) >= identityCacheMax {
		clear(m.cache)
	}
	m.cache[key] = mintedToken{token: tok, renewAt: now.Add(m.ttl / 2)}
	m.mu.Unlock()
	return tok, nil
}

// key hashes what the token would say and the current signing key. The
// identity's part is hashed once per Identity (a cached token's identity is
// reused across requests) and kept on it.
func (m *identityMinter) key(tenant string, id *envoyauth.Identity) [32]byte {
	d := id.ClaimsDigest()
	h := sha256.New()
	w := func(s string) { h.Write([]byte(s)); h.Write([]byte{0}) }
	w(m.ring.SignerKID())
	w(tenant)
	h.Write(d[:])
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// Verify checks an identity token this ring signed (any replica's, with a
// shared ring): signature, issuer, audience and lifetime, and returns its
// tenant and subject.
func (m *identityMinter) Verify(ctx context.Context, token string) (tenant, subject string, err error) {
	set, err := m.ring.Keys(ctx)
	if err != nil {
		return "", "", err
	}
	parse := func(set jwk.Set) (jwt.Token, error) {
		return jwt.ParseString(token,
			jwt.WithKeySet(set, jws.WithInferAlgorithmFromKey(true)),
			jwt.WithValidate(true),
			jwt.WithIssuer(m.issuer),
			jwt.WithAudience(m.audience),
			jwt.WithRequiredClaim("exp"),
			jwt.WithClock(jwt.ClockFunc(m.now)),
			jwt.WithAcceptableSkew(5*time.Second),
		)
	}
	tok, err := parse(set)
	if err != nil {
		// A shared ring may lack a key another replica rotated to: Knows
		// syncs it, then the token is checked again.
		if msg, perr := jws.ParseString(token); perr == nil && len(msg.Signatures()) == 1 {
			if kid := msg.Signatures()[0].ProtectedHeaders().KeyID(); kid != "" && m.ring.Knows(ctx, kid) {
				if set2, kerr := m.ring.Keys(ctx); kerr == nil {
					tok, err = parse(set2)
				}
			}
		}
	}
	if err != nil {
		return "", "", err
	}
	if t, ok := tok.Get(wire.ClaimTenant); ok {
		tenant, _ = t.(string)
	}
	if tenant == "" || tok.Subject() == "" {
		return "", "", errors.New("identity token without tenant or subject")
	}
	return tenant, tok.Subject(), nil
}
