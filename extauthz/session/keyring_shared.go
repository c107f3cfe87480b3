package session

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/redis/go-redis/v9"
)

// KeyStore holds the state of a KeyRing shared by replicas: the signing
// key (private) and the public keys that still verify, with their ends.
// Retired private keys are never stored.
//
// The state is stored as is: whoever can read the store can sign tokens.
// Protect it like the key itself (Redis password, network policy).
type KeyStore interface {
	// Load returns the state (nil when there is none).
	Load(ctx context.Context) ([]byte, error)
	// Swap replaces the state with next if it still is old (nil: none),
	// to expire after ttl, and reports whether it did.
	Swap(ctx context.Context, old, next []byte, ttl time.Duration) (bool, error)
}

// ringState is a KeyRing as stored in a KeyStore.
type ringState struct {
	RotatedAt time.Time         `json:"rotated_at"`
	Signer    json.RawMessage   `json:"signer"` // private JWK
	Keys      []storedVerifyKey `json:"keys"`
}

type storedVerifyKey struct {
	JWK      json.RawMessage `json:"jwk"` // public
	RetireAt time.Time       `json:"retire_at,omitzero"`
}

func (s *ringSnapshot) state() ([]byte, error) {
	signer, err := json.Marshal(s.signer)
	if err != nil {
		return nil, err
	}
	st := ringState{RotatedAt: s.rotatedAt, Signer: signer}
	for _, kid := range sortedKids(s) {
		v := s.verify[kid]
		b, err := json.Marshal(v.jwk)
		if err != nil {
			return nil, err
		}
		st.Keys = append(st.Keys, storedVerifyKey{JWK: b, RetireAt: v.retireAt})
	}
	return json.Marshal(st)
}

func sortedKids(s *ringSnapshot) []string {
	kids := []string{s.signerKID}
	for k := range s.verify {
		if k != s.signerKID {
			kids = append(kids, k)
		}
	}
	return kids
}

func decodeState(raw []byte) (*ringSnapshot, error) {
	var st ringState
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("session: shared key ring: %w", err)
	}
	signer, err := jwk.ParseKey(st.Signer)
	if err != nil {
		return nil, fmt.Errorf("session: shared key ring: signer: %w", err)
	}
	s := &ringSnapshot{signer: signer, signerKID: signer.KeyID(), signerAlg: signer.Algorithm().String(),
		rotatedAt: st.RotatedAt, verify: map[string]*verifyKey{}}
	for _, k := range st.Keys {
		pub, err := jwk.ParseKey(k.JWK)
		if err != nil {
			return nil, fmt.Errorf("session: shared key ring: key: %w", err)
		}
		if _, private := pub.(interface{ D() []byte }); private {
			return nil, errors.New("session: shared key ring: a verification key is private")
		}
		vk, err := toVerifyKey(pub.Algorithm().String(), pub)
		if err != nil {
			return nil, err
		}
		vk.retireAt = k.RetireAt
		s.verify[pub.KeyID()] = vk
	}
	if v := s.verify[s.signerKID]; v == nil || !v.retireAt.IsZero() {
		return nil, errors.New("session: shared key ring: signer is not a current verification key")
	}
	if err := s.encode(); err != nil {
		return nil, err
	}
	return s, nil
}

// Sync adopts the shared ring from the Store, rotating it (for everyone)
// when it is due or absent and dropping keys past their overlap. Without a
// Store it does nothing. Run calls it every interval; Verify calls it (at
// most once a second) when it meets a kid it does not know.
func (r *KeyRing) Sync(ctx context.Context) error {
	if r.cfg.Store == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.syncLocked(ctx, false)
}

// syncLocked: r.mu is held.
func (r *KeyRing) syncLocked(ctx context.Context, rotate bool) error {
	for range 5 {
		raw, err := r.cfg.Store.Load(ctx)
		if err != nil {
			return fmt.Errorf("session: shared key ring: %w", err)
		}
		now := r.cfg.Now()
		cur := r.snap.Load()
		if raw != nil && cur != nil && bytes.Equal(raw, r.raw) && !rotate && !r.stale(cur, now) {
			return nil
		}
		var snap *ringSnapshot
		if raw != nil {
			if snap, err = decodeState(raw); err != nil {
				return err
			}
		}
		next := snap
		switch {
		case snap == nil || rotate || snap.signerAlg != r.cfg.Algorithm || !now.Before(snap.rotatedAt.Add(r.cfg.RotateEvery)):
			if next, err = r.rotated(snap, now); err != nil {
				return err
			}
		case r.stale(snap, now):
			if next, err = pruned(snap, now); err != nil {
				return err
			}
		}
		if next != snap {
			enc, err := next.state()
			if err != nil {
				return err
			}
			ok, err := r.cfg.Store.Swap(ctx, raw, enc, r.cfg.RotateEvery+r.cfg.Overlap+time.Hour)
			if err != nil {
				return fmt.Errorf("session: shared key ring: %w", err)
			}
			if !ok {
				rotate = false // another replica wrote: look again
				continue
			}
			raw = enc
		}
		r.snap.Store(next)
		r.raw = raw
		return nil
	}
	return errors.New("session: shared key ring: too much contention")
}

// stale reports whether s is due for rotation or holds retired keys.
func (r *KeyRing) stale(s *ringSnapshot, now time.Time) bool {
	if !now.Before(s.rotatedAt.Add(r.cfg.RotateEvery)) {
		return true
	}
	for _, v := range s.verify {
		if !v.retireAt.IsZero() && !now.Before(v.retireAt) {
			return true
		}
	}
	return false
}

// Knows reports whether kid names one of the ring's keys that verify
// (current or previous). A shared ring that does not know it asks for a
// background sync (another replica may have rotated); see refreshForKid.
func (r *KeyRing) Knows(ctx context.Context, kid string) bool {
	if _, ok := r.snap.Load().verify[kid]; ok {
		return true
	}
	if !r.refreshForKid(ctx) {
		return false
	}
	_, ok := r.snap.Load().verify[kid]
	return ok
}

// syncWait bounds how long a request waits for a background sync it
// triggered, and only while the store answered the last sync: a token
// signed just after another replica rotated is recognised at once when
// Redis is healthy, and a hung Redis never holds a request longer than this
// (not the store's timeout). While the store fails, requests do not wait.
const syncWait = 20 * time.Millisecond

// refreshForKid starts a background sync of a shared ring on an unknown kid
// (at most one at a time, and at most one start a second) and reports
// whether a sync finished in time for the caller (see syncWait). It never
// runs the sync on the caller's goroutine.
func (r *KeyRing) refreshForKid(ctx context.Context) bool {
	if r.cfg.Store == nil {
		return false
	}
	done := r.triggerSync()
	if done == nil || r.storeFailing.Load() {
		return false
	}
	t := time.NewTimer(syncWait)
	defer t.Stop()
	select {
	case <-done:
		return !r.storeFailing.Load()
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// triggerSync returns the channel closed when the sync in progress ends,
// starting one if none runs and the last started a second or more ago (nil:
// rate limited).
func (r *KeyRing) triggerSync() <-chan struct{} {
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	if r.syncDone != nil {
		return r.syncDone
	}
	now := time.Now().UnixNano()
	if now-r.lastSync.Load() < int64(time.Second) {
		return nil
	}
	r.lastSync.Store(now)
	done := make(chan struct{})
	r.syncDone = done
	go func() {
		// Bounded by the store's own timeout and this deadline; not tied
		// to the request that asked for it.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := r.Sync(ctx)
		r.storeFailing.Store(err != nil)
		r.syncMu.Lock()
		r.syncDone = nil
		r.syncMu.Unlock()
		close(done)
	}()
	return done
}

// RedisKeyStore is a KeyStore in one Redis key (default
// "kailash:sess:keyring"); Swap is a compare-and-set Lua script.
type RedisKeyStore struct {
	c   redis.UniversalClient
	key string
}

var _ KeyStore = (*RedisKeyStore)(nil)

// NewRedisKeyStore returns a store at key in c ("": the default key).
func NewRedisKeyStore(c redis.UniversalClient, key string) *RedisKeyStore {
	if key == "" {
		key = DefaultRedisPrefix + "keyring"
	}
	return &RedisKeyStore{c: c, key: key}
}

var swapScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`)

// Load implements KeyStore.
func (s *RedisKeyStore) Load(ctx context.Context) ([]byte, error) {
	b, err := s.c.Get(ctx, s.key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	return b, nil
}

// Swap implements KeyStore.
func (s *RedisKeyStore) Swap(ctx context.Context, old, next []byte, ttl time.Duration) (bool, error) {
	n, err := swapScript.Run(ctx, s.c, []string{s.key}, old, next, ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("redis: %w", err)
	}
	return n == 1, nil
}
