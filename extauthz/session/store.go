package session

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// Store errors.
var (
	// ErrNotFound: no such session or refresh token.
	ErrNotFound = errors.New("session: not found")
	// ErrTooManySessions: the user has MaxSessions live sessions and the
	// policy refuses new ones.
	ErrTooManySessions = errors.New("session: too many sessions")
)

// ReuseError is returned by Store.Rotate when the refresh token was already
// rotated: its session must be revoked.
type ReuseError struct{ SessionID string }

func (e *ReuseError) Error() string { return "session: refresh token reused" }

// Unwrap lets errors.Is match ErrRefreshReused.
func (e *ReuseError) Unwrap() error { return ErrRefreshReused }

// Session is one login: who, and its lifetime. One session is one refresh
// token family.
type Session struct {
	ID         string
	Subject    string
	Tenant     string
	Roles      []string
	Groups     []string
	Attributes map[string]string
	Method     string   // ldap, saml, ...
	AMR        []string // authentication methods: pwd, otp
	CreatedAt  time.Time
	// LastSeen is updated at most every touch interval (see Manager).
	LastSeen  time.Time
	ExpiresAt time.Time // absolute end (CreatedAt + refresh lifetime)
}

// Limit is the concurrent-session rule applied atomically by Store.Create.
type Limit struct {
	// Max live sessions per user (tenant + subject); 0 is unlimited.
	Max int
	// EvictOldest makes room by deleting the oldest sessions; otherwise
	// Create refuses with ErrTooManySessions.
	EvictOldest bool
	// Sessions expired at Now or idle since before IdleCutoff are dead and
	// do not count (IdleCutoff zero: no idle rule).
	Now, IdleCutoff time.Time
}

// Store keeps sessions and refresh tokens (by hash, never the token). Every
// method is atomic; a Redis implementation uses Lua scripts for Create and
// Rotate.
type Store interface {
	// Create stores s with its first refresh token, applying limit. It
	// returns the ids of sessions evicted to make room.
	Create(ctx context.Context, s Session, refreshHash string, limit Limit) (evicted []string, err error)
	// Get returns the session (ErrNotFound when unknown or deleted).
	Get(ctx context.Context, id string) (Session, error)
	// Touch records activity.
	Touch(ctx context.Context, id string, at time.Time) error
	// Rotate consumes the refresh token oldHash and registers newHash for
	// the same session, returning the session. A token already consumed
	// gives a *ReuseError; an unknown one ErrNotFound.
	Rotate(ctx context.Context, oldHash, newHash string) (Session, error)
	// Delete removes the session and all its refresh tokens.
	Delete(ctx context.Context, id string) error
}

// MemoryStore is the in-process Store.
type MemoryStore struct {
	mu       sync.Mutex // guards all fields
	sessions map[string]*memSession
	byUser   map[string][]string // user key → session ids, oldest first
	refresh  map[string]*memRefresh
}

type memSession struct {
	s      Session
	hashes []string // every refresh token of the family, used or not
}

type memRefresh struct {
	sid  string
	used bool
}

// NewMemoryStore returns an empty store.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{sessions: map[string]*memSession{}, byUser: map[string][]string{}, refresh: map[string]*memRefresh{}}
}

var _ Store = (*MemoryStore)(nil)

func userKey(tenant, subject string) string { return tenant + "\x00" + subject }

// Create implements Store.
func (m *MemoryStore) Create(_ context.Context, s Session, refreshHash string, limit Limit) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	uk := userKey(s.Tenant, s.Subject)
	// Drop the user's dead sessions first: they do not count.
	var live []string
	for _, id := range m.byUser[uk] {
		ms, ok := m.sessions[id]
		switch {
		case !ok:
		case !limit.Now.Before(ms.s.ExpiresAt) || (!limit.IdleCutoff.IsZero() && ms.s.LastSeen.Before(limit.IdleCutoff)):
			m.deleteLocked(id)
		default:
			live = append(live, id)
		}
	}
	var evicted []string
	if limit.Max > 0 && len(live) >= limit.Max {
		if !limit.EvictOldest {
			m.byUser[uk] = live
			return nil, ErrTooManySessions
		}
		n := len(live) - limit.Max + 1
		evicted = slices.Clone(live[:n])
		for _, id := range evicted {
			m.deleteLocked(id)
		}
		live = live[n:]
	}
	m.sessions[s.ID] = &memSession{s: s, hashes: []string{refreshHash}}
	m.refresh[refreshHash] = &memRefresh{sid: s.ID}
	m.byUser[uk] = append(live, s.ID)
	return evicted, nil
}

// Get implements Store.
func (m *MemoryStore) Get(_ context.Context, id string) (Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ms, ok := m.sessions[id]
	if !ok {
		return Session{}, ErrNotFound
	}
	return ms.s, nil
}

// Touch implements Store.
func (m *MemoryStore) Touch(_ context.Context, id string, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	ms, ok := m.sessions[id]
	if !ok {
		return ErrNotFound
	}
	if at.After(ms.s.LastSeen) {
		ms.s.LastSeen = at
	}
	return nil
}

// Rotate implements Store.
func (m *MemoryStore) Rotate(_ context.Context, oldHash, newHash string) (Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.refresh[oldHash]
	if !ok {
		return Session{}, ErrNotFound
	}
	ms, ok := m.sessions[r.sid]
	if !ok {
		return Session{}, ErrNotFound
	}
	if r.used {
		return Session{}, &ReuseError{SessionID: r.sid}
	}
	r.used = true
	m.refresh[newHash] = &memRefresh{sid: r.sid}
	ms.hashes = append(ms.hashes, newHash)
	return ms.s, nil
}

// Delete implements Store.
func (m *MemoryStore) Delete(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ms, ok := m.sessions[id]; ok {
		uk := userKey(ms.s.Tenant, ms.s.Subject)
		m.byUser[uk] = slices.DeleteFunc(m.byUser[uk], func(s string) bool { return s == id })
		if len(m.byUser[uk]) == 0 {
			delete(m.byUser, uk)
		}
	}
	m.deleteLocked(id)
	return nil
}

// deleteLocked removes a session and its refresh tokens (not the byUser
// entry); m.mu is held.
func (m *MemoryStore) deleteLocked(id string) {
	ms, ok := m.sessions[id]
	if !ok {
		return
	}
	for _, h := range ms.hashes {
		delete(m.refresh, h)
	}
	delete(m.sessions, id)
}
