// Package lockout is brute-force protection for logins: failures are
// counted per user account and per client address, and after MaxFailures
// within Window the key is locked for LockFor.
//
// A user is its account, not the spelling typed: the caller keys a user by
// the directory entry the name resolves to (AccountKey), so that ALICE,
// ａｌｉｃｅ and alice, which the directory binds as one account, share one
// budget; a name no entry answers to is keyed by its Unicode NFKC case fold
// (UserKey), so it is counted whether or not it exists and its spellings
// count together. A locked key is refused before any password is checked,
// so neither the counting nor the lock reveals which usernames exist or
// whether a password was right.
package lockout

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// ErrLocked is returned (wrapped in *LockedError) while a user or address is
// locked. Callers answer it exactly like invalid credentials (or 429 with
// Retry-After), the same for existing and unknown users.
var ErrLocked = errors.New("lockout: too many failed attempts")

// LockedError says what is locked and until when.
type LockedError struct {
	// Scope is "user" or "address" (for audit logs, not for the client).
	Scope string
	Until time.Time
}

func (e *LockedError) Error() string { return ErrLocked.Error() }

// Unwrap lets errors.Is match ErrLocked.
func (e *LockedError) Unwrap() error { return ErrLocked }

// Store keeps counters and locks. Implementations must make Incr atomic
// (an in-memory map here; Redis INCR + PEXPIRE later). Keys are opaque.
type Store interface {
	// Incr adds one failure to key and returns the count of failures since
	// the counter started; the counter disappears window after its first
	// failure.
	Incr(ctx context.Context, key string, window time.Duration) (int, error)
	// Lock locks key until the given time.
	Lock(ctx context.Context, key string, until time.Time) error
	// LockedUntil returns when key's lock ends (zero when not locked).
	LockedUntil(ctx context.Context, key string) (time.Time, error)
	// Reset forgets key's failures (not its lock).
	Reset(ctx context.Context, key string) error
}

// Config tunes a Guard. Zero fields take the defaults.
type Config struct {
	// MaxFailures per user before it is locked (default 5).
	MaxFailures int
	// MaxAddressFailures per client address (default: MaxFailures). Many
	// users may share an address behind NAT: raise it there.
	MaxAddressFailures int
	// LockFor is how long a lock lasts (default 15m).
	LockFor time.Duration
	// Window is how long failures are remembered (default: LockFor).
	Window time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Defaults.
const (
	DefaultMaxFailures = 5
	DefaultLockFor     = 15 * time.Minute
)

// Guard counts failures and refuses locked users and addresses. It is safe
// for concurrent use.
type Guard struct {
	cfg   Config
	store Store
}

// New returns a Guard over store.
func New(store Store, cfg Config) *Guard {
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = DefaultMaxFailures
	}
	if cfg.MaxAddressFailures <= 0 {
		cfg.MaxAddressFailures = cfg.MaxFailures
	}
	if cfg.LockFor <= 0 {
		cfg.LockFor = DefaultLockFor
	}
	if cfg.Window <= 0 {
		cfg.Window = cfg.LockFor
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Guard{cfg: cfg, store: store}
}

// AccountKey is the per-user key of a directory account: the tenant and
// the entry's DN, lower-cased. Every spelling of a username that the
// directory resolves to the entry shares it.
func AccountKey(tenant, dn string) string {
	return "d:" + tenant + "/" + strings.ToLower(strings.TrimSpace(dn))
}

// UserKey is the per-user key of a username that no directory account
// answers to (or that cannot be looked up): the tenant and Fold(username).
// Its prefix differs from AccountKey's, so no typed name can count against
// an account's key.
func UserKey(tenant, username string) string {
	return "u:" + tenant + "/" + Fold(username)
}

// Fold is a username's Unicode NFKC case fold, without surrounding space:
// width, compatibility forms and case do not make a new counter (ALICE,
// ａｌｉｃｅ and alice fold alike).
func Fold(username string) string {
	s := norm.NFKC.String(strings.TrimSpace(username))
	// A Caser keeps state: one per call.
	return norm.NFKC.String(cases.Fold().String(s))
}

// AddressKey normalises a client address ("ip" or "ip:port"): IPv4 as is,
// IPv6 by its /64, since one client usually owns a whole /64.
func AddressKey(addr string) string {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		addr = ap.Addr().String()
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return "a:" + addr
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return "a:" + p.String()
	}
	return "a:" + ip.String()
}

// Check returns a *LockedError when the user or the address is locked, nil
// when the attempt may proceed. Call it before checking the password. user
// is a key from AccountKey or UserKey; an empty user or addr is not
// checked (to check the address before the user is looked up). A store
// error is returned as is: fail closed (503).
func (g *Guard) Check(ctx context.Context, user, addr string) error {
	now := g.cfg.Now()
	for _, k := range g.keys(user, addr) {
		until, err := g.store.LockedUntil(ctx, k.key)
		if err != nil {
			return fmt.Errorf("lockout: %w", err)
		}
		if now.Before(until) {
			return &LockedError{Scope: k.scope, Until: until}
		}
	}
	return nil
}

// Failure records a failed attempt (call it for any invalid credentials,
// never for "directory unavailable") against the user's key (AccountKey or
// UserKey) and the address. It returns a *LockedError when this failure
// locked the user or the address.
func (g *Guard) Failure(ctx context.Context, user, addr string) error {
	now := g.cfg.Now()
	var locked *LockedError
	for _, k := range g.keys(user, addr) {
		n, err := g.store.Incr(ctx, k.key, g.cfg.Window)
		if err != nil {
			return fmt.Errorf("lockout: %w", err)
		}
		if n >= k.max {
			until := now.Add(g.cfg.LockFor)
			if err := g.store.Lock(ctx, k.key, until); err != nil {
				return fmt.Errorf("lockout: %w", err)
			}
			if err := g.store.Reset(ctx, k.key); err != nil {
				return fmt.Errorf("lockout: %w", err)
			}
			if locked == nil {
				locked = &LockedError{Scope: k.scope, Until: until}
			}
		}
	}
	if locked != nil {
		return locked
	}
	return nil
}

// Success forgets the failures of user (its AccountKey). The address's
// failures stay: one good login must not reset the count of an address
// spraying passwords.
func (g *Guard) Success(ctx context.Context, user string) error {
	if err := g.store.Reset(ctx, user); err != nil {
		return fmt.Errorf("lockout: %w", err)
	}
	return nil
}

type scopedKey struct {
	scope, key string
	max        int
}

func (g *Guard) keys(user, addr string) []scopedKey {
	var keys []scopedKey
	if user != "" {
		keys = append(keys, scopedKey{"user", user, g.cfg.MaxFailures})
	}
	if addr != "" {
		keys = append(keys, scopedKey{"address", AddressKey(addr), g.cfg.MaxAddressFailures})
	}
	return keys
}

// MemoryStore is the in-process Store. Expired entries are dropped as they
// are met and by a sweep every few thousand writes.
type MemoryStore struct {
	now func() time.Time

	mu     sync.Mutex // guards the fields below
	counts map[string]counter
	locks  map[string]time.Time
	writes int
}

type counter struct {
	n       int
	expires time.Time
}

// NewMemoryStore returns an empty store on the given clock (nil: time.Now).
func NewMemoryStore(now func() time.Time) *MemoryStore {
	if now == nil {
		now = time.Now
	}
	return &MemoryStore{now: now, counts: map[string]counter{}, locks: map[string]time.Time{}}
}

var _ Store = (*MemoryStore)(nil)

// Incr implements Store.
func (m *MemoryStore) Incr(_ context.Context, key string, window time.Duration) (int, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep(now)
	c := m.counts[key]
	if !now.Before(c.expires) {
		c = counter{expires: now.Add(window)}
	}
	c.n++
	m.counts[key] = c
	return c.n, nil
}

// Lock implements Store.
func (m *MemoryStore) Lock(_ context.Context, key string, until time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.locks[key] = until
	return nil
}

// LockedUntil implements Store.
func (m *MemoryStore) LockedUntil(_ context.Context, key string) (time.Time, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	until, ok := m.locks[key]
	if ok && !now.Before(until) {
		delete(m.locks, key)
		return time.Time{}, nil
	}
	return until, nil
}

// Reset implements Store.
func (m *MemoryStore) Reset(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.counts, key)
	return nil
}

// sweep drops expired entries every 4096 writes; m.mu is held.
func (m *MemoryStore) sweep(now time.Time) {
	m.writes++
	if m.writes%4096 != 0 {
		return
	}
	for k, c := range m.counts {
		if !now.Before(c.expires) {
			delete(m.counts, k)
		}
	}
	for k, until := range m.locks {
		if !now.Before(until) {
			delete(m.locks, k)
		}
	}
}
