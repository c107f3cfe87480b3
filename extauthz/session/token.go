package session

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"
)

// reservedClaims are the claims we set; identity attributes may not use
// these names (they are flattened into the token next to them).
var reservedClaims = map[string]struct{}{
	"iss": {}, "sub": {}, "aud": {}, "exp": {}, "nbf": {}, "iat": {}, "jti": {},
	"sid": {}, "tenant": {}, "roles": {}, "groups": {}, "method": {}, "amr": {},
}

// wireClaims is the fixed part of the access token payload. Attributes are
// flattened next to it, so a plain JWT verifier (extauthz.Verifier with this
// ring as its key source) sees department, clearance, ... as claims too.
type wireClaims struct {
	Issuer   string   `json:"iss"`
	Subject  string   `json:"sub"`
	Audience []string `json:"aud"`
	Expires  int64    `json:"exp"`
	NotBef   int64    `json:"nbf"`
	Issued   int64    `json:"iat"`
	ID       string   `json:"jti"`
	Session  string   `json:"sid"`
	Tenant   string   `json:"tenant"`
	Roles    []string `json:"roles"`
	Groups   []string `json:"groups,omitempty"`
	Method   string   `json:"method,omitempty"`
	AMR      []string `json:"amr,omitempty"`
}

func (m *Manager) encodeClaims(s Session, now, exp time.Time) ([]byte, error) {
	w := wireClaims{
		Issuer: m.cfg.Issuer, Subject: s.Subject, Audience: m.cfg.Audience,
		Expires: exp.Unix(), NotBef: now.Unix(), Issued: now.Unix(), ID: randomID(12),
		Session: s.ID, Tenant: s.Tenant, Roles: s.Roles, Groups: s.Groups, Method: s.Method, AMR: s.AMR,
	}
	if w.Roles == nil {
		w.Roles = []string{}
	}
	b, err := json.Marshal(w)
	if err != nil || len(s.Attributes) == 0 {
		return b, err
	}
	extra, err := json.Marshal(s.Attributes)
	if err != nil {
		return nil, err
	}
	// {fixed...} + {attrs...} → {fixed..., attrs...}
	out := append(b[:len(b)-1:len(b)-1], ',')
	return append(out, extra[1:]...), nil
}

type header struct {
	Alg  string   `json:"alg"`
	Kid  string   `json:"kid"`
	Typ  string   `json:"typ"`
	Crit []string `json:"crit"`
}

// parse verifies the signature, issuer and audience of token and decodes
// it. Time checks are the caller's (Verify checks them on every call, also
// for cached tokens).
func (m *Manager) parse(ctx context.Context, token string) (*Claims, string, error) {
	if len(token) > 8192 {
		return nil, "", fmt.Errorf("%w: too long", ErrInvalidToken)
	}
	h64, rest, ok1 := strings.Cut(token, ".")
	p64, s64, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(s64, ".") {
		return nil, "", fmt.Errorf("%w: not a compact JWS", ErrInvalidToken)
	}
	hb, err := base64.RawURLEncoding.DecodeString(h64)
	if err != nil {
		return nil, "", fmt.Errorf("%w: header encoding", ErrInvalidToken)
	}
	var h header
	if err := json.Unmarshal(hb, &h); err != nil {
		return nil, "", fmt.Errorf("%w: header", ErrInvalidToken)
	}
	if len(h.Crit) > 0 {
		return nil, "", fmt.Errorf("%w: crit header", ErrInvalidToken)
	}
	key := m.keys.verifyKey(h.Kid, m.cfg.Now())
	if key == nil && m.keys.refreshForKid(ctx) {
		// A shared ring: another replica may have rotated.
		key = m.keys.verifyKey(h.Kid, m.cfg.Now())
	}
	if key == nil {
		return nil, "", fmt.Errorf("%w: unknown or retired kid", ErrInvalidToken)
	}
	// The key decides the algorithm; the header must agree (no alg:none,
	// no HS256-with-the-public-key).
	if h.Alg != key.alg {
		return nil, "", fmt.Errorf("%w: alg %q", ErrInvalidToken, h.Alg)
	}
	sig, err := base64.RawURLEncoding.DecodeString(s64)
	if err != nil {
		return nil, "", fmt.Errorf("%w: signature encoding", ErrInvalidToken)
	}
	digest := sha256.Sum256([]byte(token[:len(h64)+1+len(p64)]))
	if !key.verify(digest[:], sig) {
		return nil, "", fmt.Errorf("%w: bad signature", ErrInvalidToken)
	}
	pb, err := base64.RawURLEncoding.DecodeString(p64)
	if err != nil {
		return nil, "", fmt.Errorf("%w: payload encoding", ErrInvalidToken)
	}
	var w wireClaims
	if err := json.Unmarshal(pb, &w); err != nil {
		return nil, "", fmt.Errorf("%w: payload", ErrInvalidToken)
	}
	if w.Issuer != m.cfg.Issuer {
		return nil, "", fmt.Errorf("%w: issuer", ErrInvalidToken)
	}
	if !slices.ContainsFunc(w.Audience, func(a string) bool { return slices.Contains(m.cfg.Audience, a) }) {
		return nil, "", fmt.Errorf("%w: audience", ErrInvalidToken)
	}
	if w.Session == "" || w.Subject == "" || w.Tenant == "" || w.Expires == 0 {
		return nil, "", fmt.Errorf("%w: missing claims", ErrInvalidToken)
	}
	c := &Claims{
		SessionID: w.Session, TokenID: w.ID, Issuer: w.Issuer, Audience: w.Audience,
		Subject: w.Subject, Tenant: w.Tenant, Roles: w.Roles, Groups: w.Groups,
		Method: w.Method, AMR: w.AMR,
		IssuedAt: time.Unix(w.Issued, 0), ExpiresAt: time.Unix(w.Expires, 0),
	}
	// Attributes are the other string claims. Skip the second decode when
	// the payload has no more keys than the fixed claims present (a value
	// containing `":` only costs the decode).
	fixed := 10
	for _, present := range []bool{len(w.Groups) > 0, w.Method != "", len(w.AMR) > 0} {
		if present {
			fixed++
		}
	}
	if bytes.Count(pb, []byte(`":`)) > fixed {
		var all map[string]json.RawMessage
		if err := json.Unmarshal(pb, &all); err != nil {
			return nil, "", fmt.Errorf("%w: payload", ErrInvalidToken)
		}
		for k, raw := range all {
			if _, reserved := reservedClaims[k]; reserved {
				continue
			}
			var v string
			if json.Unmarshal(raw, &v) == nil {
				if c.Attributes == nil {
					c.Attributes = map[string]string{}
				}
				c.Attributes[k] = v
			}
		}
	}
	return c, h.Kid, nil
}

func (k *verifyKey) verify(digest, sig []byte) bool {
	switch {
	case k.ec != nil:
		if len(sig) != 64 {
			return false
		}
		r := new(big.Int).SetBytes(sig[:32])
		s := new(big.Int).SetBytes(sig[32:])
		return ecdsa.Verify(k.ec, digest, r, s)
	case k.rsa != nil:
		return rsa.VerifyPKCS1v15(k.rsa, crypto.SHA256, digest, sig) == nil
	}
	return false
}

// verifyKey returns the key with kid if it verifies at now.
func (r *KeyRing) verifyKey(kid string, now time.Time) *verifyKey {
	k := r.snap.Load().verify[kid]
	if k == nil || (!k.retireAt.IsZero() && !now.Before(k.retireAt)) {
		return nil
	}
	return k
}

// tokenCache remembers verified tokens (by SHA-256) so the Check path pays
// for the signature once per token. An entry is used only while its key
// still verifies.
type tokenCache struct {
	max int

	mu sync.RWMutex // guards m
	m  map[[32]byte]cached
}

type cached struct {
	c   *Claims
	kid string
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, m: make(map[[32]byte]cached, max)}
}

func (t *tokenCache) get(key [32]byte, ring *KeyRing) *Claims {
	t.mu.RLock()
	e, ok := t.m[key]
	t.mu.RUnlock()
	if !ok || ring.verifyKey(e.kid, ring.cfg.Now()) == nil {
		return nil
	}
	return e.c
}

func (t *tokenCache) put(key [32]byte, c *Claims, kid string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) >= t.max {
		// Drop about a tenth, arbitrary ones (map order): cheap and good
		// enough, since every entry can be re-verified.
		n := t.max / 10
		for k := range t.m {
			delete(t.m, k)
			if n--; n <= 0 {
				break
			}
		}
	}
	t.m[key] = cached{c: c, kid: kid}
}
