package samlsp

import (
	"context"
	"errors"
	"sync"
	"time"
)

// RequestStore remembers the AuthnRequests we sent until their response
// arrives, for the InResponseTo check. Take must be atomic: a request id
// is taken once, by one caller. Replicas that share an ACS must share the
// store: a login started on one replica may post its response to another.
type RequestStore interface {
	// Remember records request id, started for tenant, until until.
	Remember(ctx context.Context, id, tenant string, until time.Time) error
	// Take removes request id and returns the tenant it was started for;
	// ok is false when id is unknown, already taken or expired.
	Take(ctx context.Context, id string) (tenant string, ok bool, err error)
}

// DefaultMaxPendingRequests bounds a MemoryRequestStore.
const DefaultMaxPendingRequests = 100_000

// ErrTooManyRequests: a MemoryRequestStore holds DefaultMaxPendingRequests
// unexpired requests; forgetting one would fail a login in progress.
var ErrTooManyRequests = errors.New("saml: too many pending requests")

// MemoryRequestStore is a RequestStore for one process.
type MemoryRequestStore struct {
	max int
	now func() time.Time

	mu  sync.Mutex // guards ids
	ids map[string]pendingRequest
}

type pendingRequest struct {
	tenant string
	until  time.Time
}

var _ RequestStore = (*MemoryRequestStore)(nil)

// NewMemoryRequestStore holds at most max requests (0:
// DefaultMaxPendingRequests) on clock now (nil: time.Now).
func NewMemoryRequestStore(max int, now func() time.Time) *MemoryRequestStore {
	if max <= 0 {
		max = DefaultMaxPendingRequests
	}
	if now == nil {
		now = time.Now
	}
	return &MemoryRequestStore{max: max, now: now, ids: map[string]pendingRequest{}}
}

// Remember implements RequestStore.
func (s *MemoryRequestStore) Remember(_ context.Context, id, tenant string, until time.Time) error {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ids) >= s.max {
		for k, p := range s.ids {
			if !now.Before(p.until) {
				delete(s.ids, k)
			}
		}
		if len(s.ids) >= s.max {
			return ErrTooManyRequests
		}
	}
	s.ids[id] = pendingRequest{tenant: tenant, until: until}
	return nil
}

// Take implements RequestStore.
func (s *MemoryRequestStore) Take(_ context.Context, id string) (string, bool, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.ids[id]
	if !ok {
		return "", false, nil
	}
	delete(s.ids, id)
	if !now.Before(p.until) {
		return "", false, nil
	}
	return p.tenant, true, nil
}
