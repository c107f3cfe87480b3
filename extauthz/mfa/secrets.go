package mfa

import (
	"context"
	"strconv"
	"sync"
	"time"
)

// DefaultPendingTTL is how long an enrolment waits for its first code.
const DefaultPendingTTL = 15 * time.Minute

// UserSecrets is what a SecretStore holds for one user: the enrolled secret
// and an enrolment awaiting its first code. Either may be "".
type UserSecrets struct {
	Secret  string // enrolled
	Pending string // awaiting its first good code
	ref     string // identifies this pending enrolment for Confirm
}

// SecretStore keeps users' TOTP secrets. An enrolment is pending until a
// code of its secret verifies; Confirm then makes it the user's secret,
// once. The enrolled secret stays in force until then, so a re-enrolment
// that is never completed leaves the old one in place.
//
// Implementations are in this package (Confirm compares an unexported
// reference that Load filled in).
type SecretStore interface {
	// Load returns the user's secrets (zero when none; an expired pending
	// enrolment is none).
	Load(ctx context.Context, user string) (UserSecrets, error)
	// Begin stores secret as the user's pending enrolment for ttl,
	// replacing any pending one; the enrolled secret is kept.
	Begin(ctx context.Context, user, secret string, ttl time.Duration) error
	// Confirm makes the pending enrolment of s (from Load) the user's
	// secret if it is still the pending one, and reports whether it was.
	// Of two concurrent calls, at most one succeeds.
	Confirm(ctx context.Context, user string, s UserSecrets) (bool, error)
}

// MemorySecrets is the in-process SecretStore.
type MemorySecrets struct {
	now func() time.Time

	mu    sync.Mutex // guards the fields below
	users map[string]*memSecrets
	seq   uint64
	begun int // Begin calls since the last sweep
}

type memSecrets struct {
	secret, pending string
	until           time.Time
	ref             uint64
}

var _ SecretStore = (*MemorySecrets)(nil)

// NewMemorySecrets returns an empty store on clock now (nil: time.Now).
func NewMemorySecrets(now func() time.Time) *MemorySecrets {
	if now == nil {
		now = time.Now
	}
	return &MemorySecrets{now: now, users: map[string]*memSecrets{}}
}

// Load implements SecretStore.
func (m *MemorySecrets) Load(_ context.Context, user string) (UserSecrets, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.users[user]
	if u == nil {
		return UserSecrets{}, nil
	}
	s := UserSecrets{Secret: u.secret}
	if u.pending != "" && now.Before(u.until) {
		s.Pending, s.ref = u.pending, strconv.FormatUint(u.ref, 10)
	}
	return s, nil
}

// Begin implements SecretStore.
func (m *MemorySecrets) Begin(_ context.Context, user, secret string, ttl time.Duration) error {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.begun++; m.begun >= 1024 {
		m.begun = 0
		for k, u := range m.users {
			if u.secret == "" && !now.Before(u.until) {
				delete(m.users, k)
			}
		}
	}
	u := m.users[user]
	if u == nil {
		u = &memSecrets{}
		m.users[user] = u
	}
	m.seq++
	u.pending, u.until, u.ref = secret, now.Add(ttl), m.seq
	return nil
}

// Confirm implements SecretStore.
func (m *MemorySecrets) Confirm(_ context.Context, user string, s UserSecrets) (bool, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.users[user]
	if u == nil || u.pending == "" || !now.Before(u.until) || s.ref == "" || strconv.FormatUint(u.ref, 10) != s.ref {
		return false, nil
	}
	u.secret, u.pending, u.until, u.ref = u.pending, "", time.Time{}, 0
	return true, nil
}
