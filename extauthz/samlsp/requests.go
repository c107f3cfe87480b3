package samlsp

import (
	"context"
	"errors"
	"sync"
	"time"
)

// RequestStore remembers the AuthnRequests we sent until their response
// arrives, for the InResponseTo check. Requests are kept per tenant, each
// tenant bounded on its own: a tenant whose pending requests are at the
// bound is refused new ones (ErrTooManyRequests) and never pushes out
// another tenant's. Take must be atomic: a request id is taken once, by
// one caller, and only for the tenant that started it. Replicas that share
// an ACS must share the store: a login started on one replica may post its
// response to another.
type RequestStore interface {
	// Remember records request id, started for tenant, until until. max
	// bounds the tenant's unexpired requests (<= 0:
	// DefaultMaxPendingRequests); at the bound it returns
	// ErrTooManyRequests.
	Remember(ctx context.Context, tenant, id string, until time.Time, max int) error
	// Take removes tenant's request id; ok is false when id is unknown,
	// another tenant's (which keeps it), already taken or expired.
	Take(ctx context.Context, tenant, id string) (ok bool, err error)
}

// DefaultMaxPendingRequests bounds one tenant's pending requests when the
// caller gives no bound.
const DefaultMaxPendingRequests = 10_000

// ErrTooManyRequests: the tenant already has its bound of unexpired
// pending requests; forgetting one would fail a login in progress.
var ErrTooManyRequests = errors.New("saml: too many pending requests for this tenant")

// MemoryRequestStore is a RequestStore for one process.
type MemoryRequestStore struct {
	now func() time.Time

	mu      sync.Mutex                      // guards tenants
	tenants map[string]map[string]time.Time // tenant → request id → until
}

var _ RequestStore = (*MemoryRequestStore)(nil)

// NewMemoryRequestStore returns an empty store on clock now (nil:
// time.Now).
func NewMemoryRequestStore(now func() time.Time) *MemoryRequestStore {
	if now == nil {
		now = time.Now
	}
	return &MemoryRequestStore{now: now, tenants: map[string]map[string]time.Time{}}
}

// Remember implements RequestStore.
func (s *MemoryRequestStore) Remember(_ context.Context, tenant, id string, until time.Time, max int) error {
	if max <= 0 {
		max = DefaultMaxPendingRequests
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := s.tenants[tenant]
	if ids == nil {
		ids = map[string]time.Time{}
		s.tenants[tenant] = ids
	}
	if len(ids) >= max {
		for k, u := range ids {
			if !now.Before(u) {
				delete(ids, k)
			}
		}
		if len(ids) >= max {
			return ErrTooManyRequests
		}
	}
	ids[id] = until
	return nil
}

// Take implements RequestStore.
func (s *MemoryRequestStore) Take(_ context.Context, tenant, id string) (bool, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := s.tenants[tenant]
	until, ok := ids[id]
	if !ok {
		return false, nil
	}
	delete(ids, id)
	if len(ids) == 0 {
		delete(s.tenants, tenant)
	}
	return now.Before(until), nil
}

// Pending returns how many of tenant's requests are held (expired ones
// included until a full tenant sweeps them), for tests and metrics.
func (s *MemoryRequestStore) Pending(tenant string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tenants[tenant])
}
