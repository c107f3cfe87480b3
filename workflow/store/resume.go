package store

import (
	"context"
	"time"
)

// Resuming taken-over executions (docs/deploy.md). When a runner takes over
// an execution whose owner's lease ended, its Resumer (the runner's server)
// decides from the execution's record — its workflow version, input, roles
// and the results of the nodes that completed — whether it may go on here.
// If so the takeover only moves the lease to this runner (the execution stays
// running) and hands the execution to Resume; otherwise it is marked
// interrupted, the reason saying why it could not resume.

// Resumer resumes executions taken over from dead runners.
type Resumer interface {
	// Resumable returns "" when e (read with its node results) may resume
	// on this runner, otherwise why not; it is called within the takeover,
	// so it must not write the execution.
	Resumable(ctx context.Context, e *ExecutionRecord) string
	// Resume runs e, owned by this runner from now on, from its completed
	// nodes; it must not block.
	Resume(e *ExecutionRecord)
}

// SetResumer sets the resumer of taken-over executions and sweeps at once
// for expired leases (on PostgreSQL; a store opened with DeferTakeover took
// over nothing until now).
func (s *sqlStore) SetResumer(r Resumer) {
	s.lease.mu.Lock()
	s.lease.resumer = r
	s.lease.deferred = false
	sweep := s.lease.sweeps
	s.lease.mu.Unlock()
	if !sweep {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.sweep(ctx); err != nil {
		s.lease.log.Warn("runner: taking over expired executions failed; retrying", "err", err)
	}
}

// resumer is the resumer set, nil for none; deferred says the takeover
// waits for one.
func (l *leaser) resumerSet() (r Resumer, deferred bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.resumer, l.deferred
}
