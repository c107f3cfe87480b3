// Package session issues and checks our own login sessions: a short JWT
// access token (signed by a rotating KeyRing) and an opaque refresh token
// that is rotated on every use. Reusing a rotated refresh token revokes the
// whole session. Sessions have a per-user limit, an idle timeout and an
// absolute lifetime; logout revokes.
//
// Verify is on the Check path: after the first verification of a token it
// costs a hash, two map lookups and an atomic store.
package session

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Errors. Token errors mean 401; store errors (anything else) mean 503.
var (
	ErrInvalidToken    = errors.New("session: invalid token")
	ErrExpired         = errors.New("session: token expired")
	ErrRevoked         = errors.New("session: session revoked")
	ErrIdle            = errors.New("session: session idle too long")
	ErrSessionExpired  = errors.New("session: session expired")
	ErrInvalidRefresh  = errors.New("session: invalid refresh token")
	ErrRefreshReused   = errors.New("session: refresh token reused; session revoked")
	errReservedAttrKey = errors.New("session: attribute name is a reserved claim")
)

// LimitPolicy says what a login beyond MaxSessions does.
type LimitPolicy int

const (
	// RefuseNew fails the new login with ErrTooManySessions.
	RefuseNew LimitPolicy = iota
	// EvictOldest revokes the user's oldest sessions.
	EvictOldest
)

// Config tunes a Manager. Zero fields take the defaults.
type Config struct {
	// Issuer (iss) and Audience (aud) of access tokens; required.
	Issuer   string
	Audience []string
	// AccessTTL (default 8h), RefreshTTL (the session's absolute lifetime,
	// default 30 days), IdleTimeout (default 1h; negative disables).
	AccessTTL   time.Duration
	RefreshTTL  time.Duration
	IdleTimeout time.Duration
	// MaxSessions per user (0: unlimited) and what happens beyond it.
	MaxSessions int
	OnLimit     LimitPolicy
	// ClockSkew tolerated on exp/iat between replicas (default 30s).
	ClockSkew time.Duration
	// TouchEvery bounds how often activity is written to the store
	// (default: a minute, or IdleTimeout/10 if smaller).
	TouchEvery time.Duration
	// RecheckEvery makes Verify confirm with the store, at most this often
	// per session, that a session it tracks still exists (and pick up the
	// activity other replicas recorded). With a store shared by replicas it
	// bounds how long a revocation on one replica (logout, refresh-token
	// reuse, eviction) takes to be seen by the others: at most RecheckEvery
	// plus one store round trip. Zero disables it (one replica, or tests);
	// a store error during a recheck fails the request (503).
	RecheckEvery time.Duration
	// CacheSize bounds the verified-token cache (default 8192; negative
	// disables it).
	CacheSize int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Identity is who logged in, as the identity provider said.
type Identity struct {
	Subject    string
	Tenant     string
	Roles      []string
	Groups     []string
	Attributes map[string]string // department, clearance, location, ...
	Method     string            // ldap, saml, oidc
	AMR        []string          // pwd, otp
}

// Tokens are what a login or refresh hands to the client.
type Tokens struct {
	SessionID        string
	AccessToken      string
	AccessExpiresAt  time.Time
	RefreshToken     string
	RefreshExpiresAt time.Time
}

// String redacts the tokens.
func (t *Tokens) String() string { return "session.Tokens{sid=" + t.SessionID + ", [redacted]}" }

// Claims are a verified access token. They are shared between callers (the
// verified-token cache hands out the same value): never modify them.
type Claims struct {
	SessionID  string
	TokenID    string
	Issuer     string
	Audience   []string
	Subject    string
	Tenant     string
	Roles      []string
	Groups     []string
	Attributes map[string]string
	Method     string
	AMR        []string
	IssuedAt   time.Time
	ExpiresAt  time.Time
}

// Manager issues, refreshes, verifies and revokes sessions. It is safe for
// concurrent use.
type Manager struct {
	cfg   Config
	keys  *KeyRing
	store Store

	mu       sync.RWMutex         // guards revoked and activity
	revoked  map[string]time.Time // session id → when its last token expires
	activity map[string]*activity
	sweeps   atomic.Int64

	cache *tokenCache
}

// activity is a session's last use as this replica saw it (unix nanos).
type activity struct {
	last      atomic.Int64
	persisted atomic.Int64
	checked   atomic.Int64 // last confirmation by the store (RecheckEvery)
	expires   int64        // session's absolute end
}

// NewManager returns a Manager signing with keys and storing in store.
func NewManager(cfg Config, keys *KeyRing, store Store) (*Manager, error) {
	if cfg.Issuer == "" || len(cfg.Audience) == 0 {
		return nil, errors.New("session: issuer and audience are required")
	}
	if keys == nil || store == nil {
		return nil, errors.New("session: key ring and store are required")
	}
	if cfg.AccessTTL <= 0 {
		cfg.AccessTTL = 8 * time.Hour
	}
	if cfg.RefreshTTL <= 0 {
		cfg.RefreshTTL = 30 * 24 * time.Hour
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = time.Hour
	}
	if cfg.ClockSkew <= 0 {
		cfg.ClockSkew = 30 * time.Second
	}
	if cfg.TouchEvery <= 0 {
		cfg.TouchEvery = time.Minute
		if cfg.IdleTimeout > 0 && cfg.IdleTimeout/10 < cfg.TouchEvery {
			cfg.TouchEvery = cfg.IdleTimeout / 10
		}
	}
	if cfg.RecheckEvery < 0 {
		return nil, errors.New("session: recheck interval must not be negative")
	}
	if cfg.MaxSessions < 0 {
		return nil, errors.New("session: max sessions must not be negative")
	}
	if cfg.AccessTTL > cfg.RefreshTTL {
		return nil, fmt.Errorf("session: access TTL %s is longer than the refresh TTL %s", cfg.AccessTTL, cfg.RefreshTTL)
	}
	if keys.Overlap() < cfg.AccessTTL {
		return nil, fmt.Errorf("session: key overlap %s is shorter than the access TTL %s: tokens would outlive their key", keys.Overlap(), cfg.AccessTTL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Manager{cfg: cfg, keys: keys, store: store, revoked: map[string]time.Time{}, activity: map[string]*activity{}}
	switch {
	case cfg.CacheSize == 0:
		m.cache = newTokenCache(8192)
	case cfg.CacheSize > 0:
		m.cache = newTokenCache(cfg.CacheSize)
	}
	return m, nil
}

// Issue starts a session for id (after a successful login) and returns its
// tokens. With MaxSessions reached it refuses (ErrTooManySessions) or
// evicts the oldest sessions, per OnLimit.
func (m *Manager) Issue(ctx context.Context, id Identity) (*Tokens, error) {
	if id.Subject == "" || id.Tenant == "" {
		return nil, errors.New("session: subject and tenant are required")
	}
	for k := range id.Attributes {
		if _, reserved := reservedClaims[k]; reserved {
			return nil, fmt.Errorf("%w: %q", errReservedAttrKey, k)
		}
	}
	now := m.cfg.Now()
	s := Session{
		ID: randomID(16), Subject: id.Subject, Tenant: id.Tenant,
		Roles: slices.Clone(id.Roles), Groups: slices.Clone(id.Groups), Attributes: cloneMap(id.Attributes),
		Method: id.Method, AMR: slices.Clone(id.AMR),
		CreatedAt: now, LastSeen: now, ExpiresAt: now.Add(m.cfg.RefreshTTL),
	}
	refresh := randomID(32)
	limit := Limit{Max: m.cfg.MaxSessions, EvictOldest: m.cfg.OnLimit == EvictOldest, Now: now}
	if m.cfg.IdleTimeout > 0 {
		limit.IdleCutoff = now.Add(-m.cfg.IdleTimeout)
	}
	evicted, err := m.store.Create(ctx, s, hashToken(refresh), limit)
	if err != nil {
		return nil, err
	}
	for _, sid := range evicted {
		m.markRevoked(sid, now)
	}
	m.sweep(now)
	return m.tokens(s, refresh, now)
}

// Refresh rotates refreshToken: it returns a new access token and a new
// refresh token; the old one is spent. Presenting a spent refresh token
// revokes the session (a stolen token was used by someone).
func (m *Manager) Refresh(ctx context.Context, refreshToken string) (*Tokens, error) {
	if len(refreshToken) != 43 { // 32 random bytes, base64url
		return nil, ErrInvalidRefresh
	}
	now := m.cfg.Now()
	next := randomID(32)
	s, err := m.store.Rotate(ctx, hashToken(refreshToken), hashToken(next))
	var reuse *ReuseError
	switch {
	case errors.As(err, &reuse):
		if err := m.Revoke(ctx, reuse.SessionID); err != nil {
			return nil, err
		}
		return nil, ErrRefreshReused
	case errors.Is(err, ErrNotFound):
		return nil, ErrInvalidRefresh
	case err != nil:
		return nil, err
	}
	if err := m.checkLive(ctx, s, now); err != nil {
		return nil, err
	}
	m.touch(ctx, s.ID, now, true)
	return m.tokens(s, next, now)
}

// checkLive revokes and refuses a session that expired, idled or was
// revoked here.
func (m *Manager) checkLive(ctx context.Context, s Session, now time.Time) error {
	m.mu.RLock()
	_, revoked := m.revoked[s.ID]
	a := m.activity[s.ID]
	m.mu.RUnlock()
	if revoked {
		return ErrRevoked
	}
	last := s.LastSeen
	if a != nil {
		if l := time.Unix(0, a.last.Load()); l.After(last) {
			last = l
		}
	}
	var why error
	switch {
	case !now.Before(s.ExpiresAt):
		why = ErrSessionExpired
	case m.cfg.IdleTimeout > 0 && now.Sub(last) > m.cfg.IdleTimeout:
		why = ErrIdle
	default:
		return nil
	}
	if err := m.Revoke(ctx, s.ID); err != nil {
		return err
	}
	return why
}

// Verify checks an access token we issued and that its session is live:
// signature by a key of the ring, issuer, audience, lifetime, not revoked,
// not idle. It records the session's activity.
func (m *Manager) Verify(ctx context.Context, token string) (*Claims, error) {
	now := m.cfg.Now()
	var c *Claims
	var key [32]byte
	if m.cache != nil {
		key = sha256.Sum256([]byte(token))
		c = m.cache.get(key, m.keys)
	}
	if c == nil {
		var kid string
		var err error
		c, kid, err = m.parse(ctx, token)
		if err != nil {
			return nil, err
		}
		if c.IssuedAt.After(now.Add(m.cfg.ClockSkew)) {
			return nil, fmt.Errorf("%w: issued in the future", ErrInvalidToken)
		}
		if m.cache != nil {
			m.cache.put(key, c, kid)
		}
	}
	if !now.Before(c.ExpiresAt.Add(m.cfg.ClockSkew)) {
		return nil, ErrExpired
	}

	m.mu.RLock()
	_, revoked := m.revoked[c.SessionID]
	a := m.activity[c.SessionID]
	m.mu.RUnlock()
	if revoked {
		return nil, ErrRevoked
	}
	if a == nil {
		// First sight of this session on this replica (or after a
		// restart): ask the store.
		s, err := m.store.Get(ctx, c.SessionID)
		if errors.Is(err, ErrNotFound) {
			m.markRevoked(c.SessionID, now)
			return nil, ErrRevoked
		}
		if err != nil {
			return nil, err
		}
		if err := m.checkLive(ctx, s, now); err != nil {
			return nil, err
		}
		a = m.track(s)
		a.checked.Store(now.UnixNano())
	}
	nowNano := now.UnixNano()
	if err := m.recheck(ctx, c.SessionID, a, nowNano); err != nil {
		return nil, err
	}
	if nowNano >= a.expires {
		_ = m.Revoke(ctx, c.SessionID)
		return nil, ErrSessionExpired
	}
	if m.cfg.IdleTimeout > 0 && nowNano-a.last.Load() > int64(m.cfg.IdleTimeout) {
		if err := m.Revoke(ctx, c.SessionID); err != nil {
			return nil, err
		}
		return nil, ErrIdle
	}
	m.touchActivity(ctx, c.SessionID, a, nowNano)
	return c, nil
}

// recheck asks the store whether a tracked session still exists, at most
// every RecheckEvery, so that revocations made by other replicas are seen.
// It also merges the activity other replicas persisted.
func (m *Manager) recheck(ctx context.Context, sid string, a *activity, now int64) error {
	if m.cfg.RecheckEvery <= 0 {
		return nil
	}
	c := a.checked.Load()
	if now-c < int64(m.cfg.RecheckEvery) || !a.checked.CompareAndSwap(c, now) {
		return nil
	}
	s, err := m.store.Get(ctx, sid)
	if errors.Is(err, ErrNotFound) {
		m.markRevoked(sid, time.Unix(0, now))
		return ErrRevoked
	}
	if err != nil {
		a.checked.CompareAndSwap(now, c) // retry at the next request
		return err
	}
	ls := s.LastSeen.UnixNano()
	for {
		last := a.last.Load()
		if ls <= last || a.last.CompareAndSwap(last, ls) {
			break
		}
	}
	return nil
}

// Revoke ends a session: its refresh tokens are deleted and its access
// tokens are refused from now on.
func (m *Manager) Revoke(ctx context.Context, sessionID string) error {
	m.markRevoked(sessionID, m.cfg.Now())
	return m.store.Delete(ctx, sessionID)
}

// Logout revokes the session of an access token. An already revoked,
// expired or idle session is not an error (logging out twice is fine).
func (m *Manager) Logout(ctx context.Context, accessToken string) error {
	c, _, err := m.parse(ctx, accessToken) // expired tokens may log out too
	if err != nil {
		return err
	}
	return m.Revoke(ctx, c.SessionID)
}

func (m *Manager) markRevoked(sid string, now time.Time) {
	// Tokens of the session expire at most AccessTTL after now.
	until := now.Add(m.cfg.AccessTTL + m.cfg.ClockSkew)
	m.mu.Lock()
	m.revoked[sid] = until
	delete(m.activity, sid)
	m.mu.Unlock()
}

func (m *Manager) track(s Session) *activity {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a, ok := m.activity[s.ID]; ok {
		return a
	}
	a := &activity{expires: s.ExpiresAt.UnixNano()}
	a.last.Store(s.LastSeen.UnixNano())
	a.persisted.Store(s.LastSeen.UnixNano())
	m.activity[s.ID] = a
	return a
}

// touch records activity of a session known to be live.
func (m *Manager) touch(ctx context.Context, sid string, now time.Time, persist bool) {
	m.mu.RLock()
	a := m.activity[sid]
	m.mu.RUnlock()
	if a == nil {
		s, err := m.store.Get(ctx, sid)
		if err != nil {
			return
		}
		a = m.track(s)
	}
	a.last.Store(now.UnixNano())
	if persist {
		a.persisted.Store(now.UnixNano())
		_ = m.store.Touch(ctx, sid, now)
	}
}

// touchActivity updates the in-memory last use, and the store's at most
// every TouchEvery (so Verify writes to a shared store rarely).
func (m *Manager) touchActivity(ctx context.Context, sid string, a *activity, now int64) {
	if last := a.last.Load(); now > last {
		a.last.CompareAndSwap(last, now)
	}
	p := a.persisted.Load()
	if now-p >= int64(m.cfg.TouchEvery) && a.persisted.CompareAndSwap(p, now) {
		// Best effort: the in-memory time already counts on this replica.
		_ = m.store.Touch(ctx, sid, time.Unix(0, now))
	}
}

// sweep drops expired revocations and dead activity entries, at most once
// a minute (called from Issue).
func (m *Manager) sweep(now time.Time) {
	n := now.UnixNano()
	if last := m.sweeps.Load(); n-last < int64(time.Minute) || !m.sweeps.CompareAndSwap(last, n) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for sid, until := range m.revoked {
		if now.After(until) {
			delete(m.revoked, sid)
		}
	}
	for sid, a := range m.activity {
		if n >= a.expires || (m.cfg.IdleTimeout > 0 && n-a.last.Load() > int64(m.cfg.IdleTimeout)) {
			delete(m.activity, sid)
		}
	}
}

func (m *Manager) tokens(s Session, refresh string, now time.Time) (*Tokens, error) {
	exp := now.Add(m.cfg.AccessTTL)
	if exp.After(s.ExpiresAt) {
		exp = s.ExpiresAt
	}
	payload, err := m.encodeClaims(s, now, exp)
	if err != nil {
		return nil, err
	}
	tok, _, err := m.keys.sign(payload)
	if err != nil {
		return nil, fmt.Errorf("session: sign: %w", err)
	}
	return &Tokens{SessionID: s.ID, AccessToken: tok, AccessExpiresAt: exp, RefreshToken: refresh, RefreshExpiresAt: s.ExpiresAt}, nil
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashToken(t string) string {
	h := sha256.Sum256([]byte(t))
	return hex.EncodeToString(h[:])
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
