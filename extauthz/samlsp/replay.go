package samlsp

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrReplayed is returned by a ReplayStore for an ID it already holds.
var ErrReplayed = errors.New("saml: assertion already used")

// ReplayStore remembers used assertion IDs until they expire. Consume must
// be atomic: of two concurrent calls with the same id, exactly one succeeds.
// Replicas that share an ACS must share the store (e.g. Redis SET NX PX).
type ReplayStore interface {
	// Consume records id as used until until. It returns ErrReplayed if id
	// is already recorded, any other error if it cannot tell (the login then
	// fails with ErrUnavailable).
	Consume(ctx context.Context, id string, until time.Time) error
}

// DefaultMaxReplayEntries bounds a MemoryReplayStore.
const DefaultMaxReplayEntries = 100_000

// errReplayStoreFull: every slot holds an unexpired ID; refusing is the
// only safe answer (forgetting one would allow its replay).
var errReplayStoreFull = errors.New("saml: replay store full")

// MemoryReplayStore is a ReplayStore for one process.
type MemoryReplayStore struct {
	max int
	now func() time.Time

	mu  sync.Mutex // guards ids
	ids map[string]time.Time
}

// NewMemoryReplayStore holds at most max IDs (0: DefaultMaxReplayEntries).
func NewMemoryReplayStore(max int) *MemoryReplayStore {
	if max <= 0 {
		max = DefaultMaxReplayEntries
	}
	return &MemoryReplayStore{max: max, now: time.Now, ids: map[string]time.Time{}}
}

// Consume implements ReplayStore.
func (s *MemoryReplayStore) Consume(ctx context.Context, id string, until time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if exp, ok := s.ids[id]; ok && now.Before(exp) {
		return ErrReplayed
	}
	if len(s.ids) >= s.max {
		for k, exp := range s.ids {
			if !now.Before(exp) {
				delete(s.ids, k)
			}
		}
		if len(s.ids) >= s.max {
			return errReplayStoreFull
		}
	}
	s.ids[id] = until
	return nil
}

// Len returns the number of IDs held (expired ones included until swept).
func (s *MemoryReplayStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}
