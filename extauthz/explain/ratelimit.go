package explain

import "sync"

// RateLimitLog is the rate-limit service's memory of recent over-limit
// answers by decision id, bounded (the oldest decision forgotten first).
// It is safe for concurrent use.
type RateLimitLog struct {
	mu    sync.Mutex
	order []string // ring of decision ids
	next  int
	steps map[string][]RateLimitStep
}

// NewRateLimitLog keeps the steps of up to n decisions (n <= 0: none).
func NewRateLimitLog(n int) *RateLimitLog {
	if n <= 0 {
		return nil
	}
	return &RateLimitLog{order: make([]string, n), steps: map[string][]RateLimitStep{}}
}

// Add records that decisionID's request went over a quota.
func (l *RateLimitLog) Add(decisionID string, st RateLimitStep) {
	if l == nil || decisionID == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.steps[decisionID]; !ok {
		if old := l.order[l.next]; old != "" {
			delete(l.steps, old)
		}
		l.order[l.next] = decisionID
		l.next = (l.next + 1) % len(l.order)
	}
	if len(l.steps[decisionID]) < 16 {
		l.steps[decisionID] = append(l.steps[decisionID], st)
	}
}

// Get is decisionID's over-limit steps (none: it went over no quota here,
// or it was forgotten).
func (l *RateLimitLog) Get(decisionID string) []RateLimitStep {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]RateLimitStep(nil), l.steps[decisionID]...)
}
