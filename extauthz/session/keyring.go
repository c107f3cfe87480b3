package session

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// KeyRingConfig tunes a KeyRing. Zero fields take the defaults.
type KeyRingConfig struct {
	// Algorithm is ES256 (default) or RS256.
	Algorithm string
	// RotateEvery is how long a key signs before a new one replaces it
	// (default 24h).
	RotateEvery time.Duration
	// Overlap is how long a replaced key keeps verifying (and stays in the
	// JWKS). It must cover the access-token lifetime (default 8h) plus the
	// time verifiers take to refetch the JWKS; default 9h.
	Overlap time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Store, when set, shares the ring between replicas (see KeyStore):
	// every replica signs with the same key and verifies the others'
	// tokens. Nil: the ring is this process's own.
	Store KeyStore
}

// KeyRing holds the signing key and the keys that still verify: the current
// one and those replaced less than Overlap ago. It is safe for concurrent
// use; readers see one immutable snapshot without locking.
type KeyRing struct {
	cfg KeyRingConfig

	mu   sync.Mutex // serialises rotations (writers of snap) and guards raw
	snap atomic.Pointer[ringSnapshot]
	raw  []byte // the shared state snap was built from (with a Store)

	lastSync     atomic.Int64  // unix nanos of the last on-demand sync start
	storeFailing atomic.Bool   // the last on-demand sync failed
	syncMu       sync.Mutex    // guards syncDone
	syncDone     chan struct{} // closed when the on-demand sync in progress ends; nil when none
}

type ringSnapshot struct {
	signer    jwk.Key // current private key (kid and alg set)
	signerKID string
	signerAlg string
	rotatedAt time.Time
	verify    map[string]*verifyKey // by kid: current and previous keys
	set       jwk.Set               // public keys, for KeySource users
	jwks      []byte                // set, encoded
}

type verifyKey struct {
	alg      string
	ec       *ecdsa.PublicKey
	rsa      *rsa.PublicKey
	retireAt time.Time // zero for the current key
	jwk      jwk.Key   // public
}

// NewKeyRing creates a ring with a fresh signing key.
func NewKeyRing(cfg KeyRingConfig) (*KeyRing, error) {
	switch cfg.Algorithm {
	case "":
		cfg.Algorithm = "ES256"
	case "ES256", "RS256":
	default:
		return nil, fmt.Errorf("session: key algorithm %q: want ES256 or RS256", cfg.Algorithm)
	}
	if cfg.RotateEvery <= 0 {
		cfg.RotateEvery = 24 * time.Hour
	}
	if cfg.Overlap <= 0 {
		cfg.Overlap = 9 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &KeyRing{cfg: cfg}
	if cfg.Store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Sync(ctx); err != nil {
			return nil, err
		}
		return r, nil
	}
	if err := r.Rotate(); err != nil {
		return nil, err
	}
	return r, nil
}

// Overlap is how long a replaced key keeps verifying.
func (r *KeyRing) Overlap() time.Duration { return r.cfg.Overlap }

// Rotate makes a new key the signing key now. The replaced key verifies for
// Overlap more; keys whose overlap has ended are dropped. With a Store the
// new ring is written there (the other replicas adopt it at their next
// sync).
func (r *KeyRing) Rotate() error {
	if r.cfg.Store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.syncLocked(ctx, true)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	next, err := r.rotated(r.snap.Load(), r.cfg.Now())
	if err != nil {
		return err
	}
	r.snap.Store(next)
	return nil
}

// rotated returns old (nil: none) with a new signing key.
func (r *KeyRing) rotated(old *ringSnapshot, now time.Time) (*ringSnapshot, error) {
	priv, pub, err := newKey(r.cfg.Algorithm)
	if err != nil {
		return nil, fmt.Errorf("session: new signing key: %w", err)
	}
	kid, _ := priv.Get(jwk.KeyIDKey)
	next := &ringSnapshot{signer: priv, signerKID: kid.(string), signerAlg: r.cfg.Algorithm, rotatedAt: now, verify: map[string]*verifyKey{}}
	if old != nil {
		for k, v := range old.verify {
			cp := *v
			if cp.retireAt.IsZero() {
				cp.retireAt = now.Add(r.cfg.Overlap)
			}
			if now.Before(cp.retireAt) {
				next.verify[k] = &cp
			}
		}
	}
	vk, err := toVerifyKey(r.cfg.Algorithm, pub)
	if err != nil {
		return nil, err
	}
	next.verify[next.signerKID] = vk
	if err := next.encode(); err != nil {
		return nil, err
	}
	return next, nil
}

// RotateIfDue rotates when the signing key is RotateEvery old and drops
// keys whose overlap has ended. It reports whether the key set changed.
func (r *KeyRing) RotateIfDue() (bool, error) {
	if r.cfg.Store != nil {
		before := r.snap.Load()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := r.Sync(ctx)
		return r.snap.Load() != before, err
	}
	now := r.cfg.Now()
	s := r.snap.Load()
	if !now.Before(s.rotatedAt.Add(r.cfg.RotateEvery)) {
		return true, r.Rotate()
	}
	for _, v := range s.verify {
		if !v.retireAt.IsZero() && !now.Before(v.retireAt) {
			return true, r.prune()
		}
	}
	return false, nil
}

func (r *KeyRing) prune() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	next, err := pruned(r.snap.Load(), r.cfg.Now())
	if err != nil {
		return err
	}
	r.snap.Store(next)
	return nil
}

// pruned returns old without the keys whose overlap has ended.
func pruned(old *ringSnapshot, now time.Time) (*ringSnapshot, error) {
	next := *old
	next.verify = map[string]*verifyKey{}
	for k, v := range old.verify {
		if v.retireAt.IsZero() || now.Before(v.retireAt) {
			next.verify[k] = v
		}
	}
	if err := next.encode(); err != nil {
		return nil, err
	}
	return &next, nil
}

// Run rotates on schedule until ctx is cancelled, checking every interval
// (0: a minute). Errors are returned by onError (may be nil) and retried at
// the next check; the old key keeps signing meanwhile.
func (r *KeyRing) Run(ctx context.Context, interval time.Duration, onError func(error)) {
	if interval <= 0 {
		interval = time.Minute
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := r.RotateIfDue(); err != nil && onError != nil {
				onError(err)
			}
		}
	}
}

// JWKS is the public key set (current and previous keys) as JSON, for
// /auth/.well-known/jwks.json. The slice is shared: do not modify it.
func (r *KeyRing) JWKS() []byte { return r.snap.Load().jwks }

// Keys returns the public key set; with it the ring is a key source for a
// JWT verifier (the set value changes when the keys do).
func (r *KeyRing) Keys(context.Context) (jwk.Set, error) { return r.snap.Load().set, nil }

// SignerKID is the kid of the current signing key (KeyIDs()[0], without
// building the list).
func (r *KeyRing) SignerKID() string { return r.snap.Load().signerKID }

// KeyIDs lists the kids that verify now, the signing key first.
func (r *KeyRing) KeyIDs() []string {
	s := r.snap.Load()
	ids := []string{s.signerKID}
	for k := range s.verify {
		if k != s.signerKID {
			ids = append(ids, k)
		}
	}
	return ids
}

func (s *ringSnapshot) encode() error {
	set := jwk.NewSet()
	// Current key first, then the others in kid order, so the JWKS is stable.
	kids := []string{s.signerKID}
	for k := range s.verify {
		if k != s.signerKID {
			kids = append(kids, k)
		}
	}
	slices.Sort(kids[1:])
	for _, k := range kids {
		if err := set.AddKey(s.verify[k].jwk); err != nil {
			return err
		}
	}
	b, err := json.Marshal(set)
	if err != nil {
		return err
	}
	s.set, s.jwks = set, b
	return nil
}

func newKey(alg string) (priv, pub jwk.Key, err error) {
	var raw any
	switch alg {
	case "ES256":
		raw, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "RS256":
		raw, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		return nil, nil, err
	}
	priv, err = jwk.FromRaw(raw)
	if err != nil {
		return nil, nil, err
	}
	pub, err = priv.PublicKey()
	if err != nil {
		return nil, nil, err
	}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, nil, err
	}
	kid := base64.RawURLEncoding.EncodeToString(tp)
	for _, k := range []jwk.Key{priv, pub} {
		if err := errors.Join(k.Set(jwk.KeyIDKey, kid), k.Set(jwk.AlgorithmKey, jwa.SignatureAlgorithm(alg)),
			k.Set(jwk.KeyUsageKey, "sig")); err != nil {
			return nil, nil, err
		}
	}
	return priv, pub, nil
}

func toVerifyKey(alg string, pub jwk.Key) (*verifyKey, error) {
	var raw any
	if err := pub.Raw(&raw); err != nil {
		return nil, err
	}
	vk := &verifyKey{alg: alg, jwk: pub}
	switch k := raw.(type) {
	case *ecdsa.PublicKey:
		vk.ec = k
	case *rsa.PublicKey:
		vk.rsa = k
	default:
		return nil, fmt.Errorf("session: unexpected key type %T", raw)
	}
	return vk, nil
}

// sign signs payload with the current key as a compact JWS.
func (r *KeyRing) sign(payload []byte) (string, string, error) {
	s := r.snap.Load()
	h := jws.NewHeaders()
	alg := s.signerAlg
	if err := errors.Join(h.Set(jws.KeyIDKey, s.signerKID), h.Set(jws.TypeKey, "JWT")); err != nil {
		return "", "", err
	}
	tok, err := jws.Sign(payload, jws.WithKey(jwa.SignatureAlgorithm(alg), s.signer, jws.WithProtectedHeaders(h)))
	if err != nil {
		return "", "", err
	}
	return string(tok), s.signerKID, nil
}

// Sign signs payload (a JSON claims set) with the current key as a compact
// JWS, for other short-lived tokens verified against the same JWKS (such as
// the identity token ext_authz attaches for the runner).
func (r *KeyRing) Sign(payload []byte) (string, error) {
	tok, _, err := r.sign(payload)
	return tok, err
}
