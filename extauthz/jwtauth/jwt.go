// Package jwtauth verifies bearer JWTs for a tenant: the signature against
// a key source (a JWKS file, or an issuer's keys fetched by oidc), the
// registered claims, the tenant claim, and a bounded cache of verified
// tokens. It yields an envoyauth.Identity or an *envoyauth.AuthError.
package jwtauth

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/internal/config"
)

func authErr(r envoyauth.Reason, format string, args ...any) *envoyauth.AuthError {
	return &envoyauth.AuthError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// KeySource supplies the keys a verifier trusts. Keys returns the same Set
// value until the keys change (the verifier drops its caches when it does).
type KeySource interface {
	Keys(ctx context.Context) (jwk.Set, error)
}

// StaticKeys is a fixed key set.
type StaticKeys struct{ Set jwk.Set }

// Keys returns the set.
func (s StaticKeys) Keys(context.Context) (jwk.Set, error) { return s.Set, nil }

// FileKeys reads a JWKS file once.
func FileKeys(path string) (StaticKeys, error) {
	set, err := jwk.ReadFile(path)
	if err != nil {
		return StaticKeys{}, fmt.Errorf("jwks %s: %w", path, err)
	}
	return StaticKeys{Set: set}, nil
}

// allowedAlgs are the signature algorithms accepted, with the key type (and
// curve) each needs. Symmetric algorithms and "none" are never accepted.
// EdDSA is Ed25519 only (RFC 8037): an OKP key of another curve (Ed448,
// X25519, X448) never verifies.
var allowedAlgs = map[string]struct{ kty, crv string }{
	"RS256": {"RSA", ""}, "RS384": {"RSA", ""}, "RS512": {"RSA", ""},
	"PS256": {"RSA", ""},
	"ES256": {"EC", "P-256"}, "ES384": {"EC", "P-384"},
	"EdDSA": {"OKP", "Ed25519"},
}

// VerifierOptions tune a Verifier.
type VerifierOptions struct {
	// Now is the clock (default time.Now).
	Now func() time.Time
	// CacheSize bounds the verified-token cache (0 = 4096; negative disables it).
	CacheSize int
}

// maxCacheTTL bounds how long a verified token is served from the cache.
const maxCacheTTL = 5 * time.Minute

// Verifier checks bearer tokens for one tenant. It is safe for concurrent use.
type Verifier struct {
	tenant      string
	issuer      string
	audiences   []string
	skew        time.Duration
	rolesClaim  string
	tenantClaim string
	// requireTenant refuses a token without tenantClaim.
	requireTenant bool
	keys          KeySource
	now           func() time.Time
	verifiers     map[string]jws.Verifier

	mu    sync.Mutex // guards ring and cache
	ring  *keyring
	cache *tokenCache
}

// NewVerifier builds the verifier of tenant from its jwt config.
func NewVerifier(tenant string, cfg config.JWT, keys KeySource, opts VerifierOptions) (*Verifier, error) {
	if keys == nil {
		return nil, errors.New("verifier: no key source")
	}
	if cfg.Issuer == "" || len(cfg.Audiences) == 0 {
		return nil, errors.New("verifier: issuer and audiences are required")
	}
	v := &Verifier{
		tenant:      tenant,
		issuer:      cfg.Issuer,
		audiences:   slices.Clone(cfg.Audiences),
		skew:        cfg.ClockSkew,
		rolesClaim:  orDefault(cfg.RolesClaim, "roles"),
		tenantClaim: orDefault(cfg.TenantClaim, "tenant"),
		keys:        keys,

		requireTenant: cfg.RequireTenantClaim != nil && *cfg.RequireTenantClaim,
		now:           opts.Now,
		verifiers:     map[string]jws.Verifier{},
	}
	if v.now == nil {
		v.now = time.Now
	}
	for alg := range allowedAlgs {
		jv, err := jws.NewVerifier(jwa.SignatureAlgorithm(alg))
		if err != nil {
			return nil, err
		}
		v.verifiers[alg] = jv
	}
	size := opts.CacheSize
	if size == 0 {
		size = 4096
	}
	if size > 0 {
		v.cache = &tokenCache{max: size, m: map[[32]byte]cacheEntry{}}
	}
	return v, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Verify checks token and returns the caller's identity, or an *AuthError
// naming the reason. Any other error (keys could not be fetched) means no
// decision can be made: the caller fails closed with a 503.
func (v *Verifier) Verify(ctx context.Context, token string) (*envoyauth.Identity, error) {
	if token == "" {
		return nil, &envoyauth.AuthError{Reason: envoyauth.ReasonMissingToken}
	}
	now := v.now()
	ring, err := v.keyring(ctx)
	if err != nil {
		return nil, err
	}
	var sum [32]byte
	if v.cache != nil {
		sum = sha256.Sum256([]byte(token))
		if id, ok := v.cache.get(sum, now); ok {
			return id, nil
		}
	}
	id, err := v.verify(ring, token, now)
	if err != nil {
		return nil, err
	}
	if v.cache != nil {
		until := now.Add(maxCacheTTL)
		if id.ExpiresAt.Before(until) {
			until = id.ExpiresAt
		}
		v.cache.put(sum, cacheEntry{id: id, until: until}, now)
	}
	return id, nil
}

// KeySource is the verifier's key source (an *oidc.Keys for keys fetched
// from a URL).
func (v *Verifier) KeySource() KeySource { return v.keys }

// keyring returns the usable keys, rebuilding them (and clearing the token
// cache) when the key source hands out a different set.
func (v *Verifier) keyring(ctx context.Context) (*keyring, error) {
	set, err := v.keys.Keys(ctx)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.ring != nil && v.ring.set == set {
		return v.ring, nil
	}
	ring, err := newKeyring(set)
	if err != nil {
		return nil, err
	}
	v.ring = ring
	if v.cache != nil {
		v.cache.clear()
	}
	return ring, nil
}

type jwtHeader struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Crit json.RawMessage `json:"crit"`
}

func (v *Verifier) verify(ring *keyring, token string, now time.Time) (*envoyauth.Identity, error) {
	d1 := strings.IndexByte(token, '.')
	d2 := strings.LastIndexByte(token, '.')
	if d1 < 0 || d1 == d2 || strings.IndexByte(token[d1+1:d2], '.') >= 0 {
		return nil, authErr(envoyauth.ReasonMalformed, "not a compact JWS")
	}
	var hdr jwtHeader
	if err := decodeSegment(token[:d1], &hdr); err != nil {
		return nil, authErr(envoyauth.ReasonMalformed, "header: %v", err)
	}
	if hdr.Alg == "" || strings.EqualFold(hdr.Alg, "none") {
		return nil, authErr(envoyauth.ReasonAlgNone, "alg %q", hdr.Alg)
	}
	need, ok := allowedAlgs[hdr.Alg]
	if !ok {
		return nil, authErr(envoyauth.ReasonAlgNotAllowed, "alg %q", hdr.Alg)
	}
	if len(hdr.Crit) > 0 && string(hdr.Crit) != "null" {
		return nil, authErr(envoyauth.ReasonMalformed, "unsupported crit header")
	}
	sig, err := base64.RawURLEncoding.DecodeString(token[d2+1:])
	if err != nil {
		return nil, authErr(envoyauth.ReasonMalformed, "signature encoding")
	}
	k, err := ring.lookup(hdr.Kid)
	if err != nil {
		return nil, err
	}
	if k.alg != "" && k.alg != hdr.Alg {
		return nil, authErr(envoyauth.ReasonAlgNotAllowed, "key %q is for %s, token uses %s", hdr.Kid, k.alg, hdr.Alg)
	}
	if k.kty != need.kty || (need.crv != "" && k.crv != need.crv) {
		return nil, authErr(envoyauth.ReasonAlgNotAllowed, "key %q (%s %s) cannot verify %s", hdr.Kid, k.kty, k.crv, hdr.Alg)
	}
	if err := v.verifiers[hdr.Alg].Verify([]byte(token[:d2]), sig, k.raw); err != nil {
		return nil, authErr(envoyauth.ReasonBadSignature, "kid %q", hdr.Kid)
	}
	var claims map[string]any
	if err := decodeSegment(token[d1+1:d2], &claims); err != nil {
		return nil, authErr(envoyauth.ReasonMalformed, "claims: %v", err)
	}
	return v.checkClaims(claims, now)
}

// HeaderKID is the kid of a JWT's header segment (the part before the
// first "."), "" when it has none or the segment does not decode as the
// verifier decodes it.
func HeaderKID(seg string) string {
	var h jwtHeader
	if decodeSegment(seg, &h) != nil {
		return ""
	}
	return h.Kid
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return errors.New("bad base64url")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return errors.New("bad JSON")
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// registered claims are not copied into Identity.Attributes.
var registered = map[string]bool{"iss": true, "sub": true, "aud": true, "exp": true, "nbf": true, "iat": true, "jti": true, "groups": true}

func (v *Verifier) checkClaims(c map[string]any, now time.Time) (*envoyauth.Identity, error) {
	if iss, _ := c["iss"].(string); iss != v.issuer {
		return nil, authErr(envoyauth.ReasonWrongIssuer, "iss %q", iss)
	}
	if !v.audienceOK(c["aud"]) {
		return nil, authErr(envoyauth.ReasonWrongAudience, "aud %v", c["aud"])
	}
	exp, ok, err := numericDate(c, "exp")
	switch {
	case err != nil:
		return nil, authErr(envoyauth.ReasonMalformed, "%v", err)
	case !ok:
		return nil, authErr(envoyauth.ReasonMalformed, "exp claim is required")
	case now.After(exp.Add(v.skew)):
		return nil, authErr(envoyauth.ReasonExpired, "expired at %s", exp.UTC().Format(time.RFC3339))
	}
	if nbf, ok, err := numericDate(c, "nbf"); err != nil {
		return nil, authErr(envoyauth.ReasonMalformed, "%v", err)
	} else if ok && now.Add(v.skew).Before(nbf) {
		return nil, authErr(envoyauth.ReasonNotYetValid, "not before %s", nbf.UTC().Format(time.RFC3339))
	}
	if iat, ok, err := numericDate(c, "iat"); err != nil {
		return nil, authErr(envoyauth.ReasonMalformed, "%v", err)
	} else if ok && now.Add(v.skew).Before(iat) {
		return nil, authErr(envoyauth.ReasonNotYetValid, "issued in the future (%s)", iat.UTC().Format(time.RFC3339))
	}
	if t, present := c[v.tenantClaim]; present {
		if s, _ := t.(string); s != v.tenant {
			return nil, authErr(envoyauth.ReasonWrongTenant, "token tenant %v, route tenant %q", t, v.tenant)
		}
	} else if v.requireTenant {
		return nil, authErr(envoyauth.ReasonMissingTenantClaim, "no %q claim; tenant %q requires it (jwt.require_tenant_claim)", v.tenantClaim, v.tenant)
	}
	sub, _ := c["sub"].(string)
	if sub == "" {
		return nil, authErr(envoyauth.ReasonMalformed, "sub claim is required")
	}
	id := &envoyauth.Identity{
		Subject:    sub,
		Tenant:     v.tenant,
		Issuer:     v.issuer,
		Roles:      StringList(c[v.rolesClaim]),
		Groups:     StringList(c["groups"]),
		Attributes: map[string]any{},
		Method:     "jwt",
		ExpiresAt:  exp,
	}
	for k, val := range c {
		if !registered[k] && k != v.rolesClaim && k != v.tenantClaim {
			id.Attributes[k] = val
		}
	}
	return id, nil
}

func (v *Verifier) audienceOK(aud any) bool {
	switch a := aud.(type) {
	case string:
		return slices.Contains(v.audiences, a)
	case []any:
		for _, x := range a {
			if s, ok := x.(string); ok && slices.Contains(v.audiences, s) {
				return true
			}
		}
	}
	return false
}

func numericDate(c map[string]any, name string) (time.Time, bool, error) {
	raw, ok := c[name]
	if !ok {
		return time.Time{}, false, nil
	}
	n, ok := raw.(json.Number)
	if !ok {
		return time.Time{}, false, fmt.Errorf("%s claim is not a number", name)
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1<<40 {
		return time.Time{}, false, fmt.Errorf("%s claim is out of range", name)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

// StringList reads a claim that is a list of strings or a space-separated
// string (OIDC login reads its ID token's claims with it too).
func StringList(v any) []string {
	switch x := v.(type) {
	case string:
		return strings.Fields(x)
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := e.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return []string{}
}

// keyring is a key set prepared for verification: public keys by kid.
type keyring struct {
	set  jwk.Set
	keys map[string]ringKey
	only *ringKey // the single key, when the set has exactly one
}

type ringKey struct {
	kty, crv, alg string
	raw           any
}

// newKeyring takes no context on purpose: a cancelled request must not
// build (and cache) a partial ring.
func newKeyring(set jwk.Set) (*keyring, error) {
	r := &keyring{set: set, keys: map[string]ringKey{}}
	var all []ringKey
	for i := range set.Len() {
		k, ok := set.Key(i)
		if !ok {
			continue
		}
		if u := k.KeyUsage(); u != "" && u != "sig" {
			continue
		}
		rk := ringKey{kty: string(k.KeyType()), alg: k.Algorithm().String()}
		if rk.kty != "RSA" && rk.kty != "EC" && rk.kty != "OKP" {
			continue // symmetric and other keys are never used
		}
		pub, err := k.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("jwks key %q: %w", k.KeyID(), err)
		}
		switch p := pub.(type) {
		case jwk.ECDSAPublicKey:
			rk.crv = p.Crv().String()
		case jwk.OKPPublicKey:
			rk.crv = p.Crv().String()
		}
		if rk.kty == "OKP" && rk.crv != "Ed25519" {
			continue // X25519 is for key agreement; Ed448 is not supported
		}
		if err := pub.Raw(&rk.raw); err != nil {
			return nil, fmt.Errorf("jwks key %q: %w", k.KeyID(), err)
		}
		// ed25519.Verify panics on a public key of the wrong length.
		if ed, ok := rk.raw.(ed25519.PublicKey); ok && len(ed) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("jwks key %q: Ed25519 key is %d bytes, want %d", k.KeyID(), len(ed), ed25519.PublicKeySize)
		}
		all = append(all, rk)
		if kid := k.KeyID(); kid != "" {
			r.keys[kid] = rk
		}
	}
	if len(all) == 1 {
		r.only = &all[0]
	}
	return r, nil
}

func (r *keyring) lookup(kid string) (ringKey, error) {
	if kid == "" {
		if r.only != nil {
			return *r.only, nil
		}
		return ringKey{}, authErr(envoyauth.ReasonUnknownKID, "token has no kid and the key set has %d keys", len(r.keys))
	}
	k, ok := r.keys[kid]
	if !ok {
		return ringKey{}, authErr(envoyauth.ReasonUnknownKID, "kid %q", kid)
	}
	return k, nil
}

// tokenCache remembers verified tokens by their SHA-256 (never the token).
type tokenCache struct {
	mu  sync.Mutex // guards m
	max int
	m   map[[32]byte]cacheEntry
}

type cacheEntry struct {
	id    *envoyauth.Identity
	until time.Time
}

func (c *tokenCache) get(k [32]byte, now time.Time) (*envoyauth.Identity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return nil, false
	}
	if !now.Before(e.until) {
		delete(c.m, k)
		return nil, false
	}
	return e.id, true
}

func (c *tokenCache) put(k [32]byte, e cacheEntry, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for key, old := range c.m {
			if !now.Before(old.until) {
				delete(c.m, key)
			}
		}
		// Still full: drop arbitrary entries (map order is random).
		for key := range c.m {
			if len(c.m) < c.max {
				break
			}
			delete(c.m, key)
		}
	}
	c.m[k] = e
}

func (c *tokenCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.m)
}

func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
