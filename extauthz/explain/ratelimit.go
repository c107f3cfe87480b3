package explain

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RateLimitLog is the rate-limit service's memory of recent over-limit
// answers by decision id, bounded (the oldest decision forgotten first).
// It is safe for concurrent use.
type RateLimitLog struct {
	mu    sync.Mutex
	order []string // ring of decision ids
	next  int
	steps map[string][]RateLimitStep

	// With a Redis backend every replica's steps are there too.
	redis *redis.Client
	ttl   time.Duration
	q     chan rlWrite
}

type rlWrite struct {
	decisionID string
	data       []byte
}

const rlPrefix = "kailash:explain:rl:"

// Share keeps the steps in c as well (the rate-limit service's Redis), for
// ttl, so any replica answers for a decision another one limited. The
// writer stops with ctx.
func (l *RateLimitLog) Share(ctx context.Context, c *redis.Client, ttl time.Duration) {
	if l == nil || c == nil {
		return
	}
	l.redis, l.ttl, l.q = c, ttl, make(chan rlWrite, 4096)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case w := <-l.q:
				wctx, cancel := context.WithTimeout(ctx, time.Second)
				_, _ = l.redis.TxPipelined(wctx, func(p redis.Pipeliner) error {
					p.RPush(wctx, rlPrefix+w.decisionID, w.data)
					p.LTrim(wctx, rlPrefix+w.decisionID, 0, 15)
					p.Expire(wctx, rlPrefix+w.decisionID, l.ttl)
					return nil
				})
				cancel()
			}
		}
	}()
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
	if l.q != nil {
		if b, err := json.Marshal(st); err == nil {
			select {
			case l.q <- rlWrite{decisionID, b}:
			default: // full: this replica's memory still has it
			}
		}
	}
}

// GetShared is Get, and when this replica has none, the shared steps.
func (l *RateLimitLog) GetShared(ctx context.Context, decisionID string) []RateLimitStep {
	steps := l.Get(decisionID)
	if len(steps) > 0 || l == nil || l.redis == nil {
		return steps
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	vals, err := l.redis.LRange(ctx, rlPrefix+decisionID, 0, 15).Result()
	if err != nil {
		return nil
	}
	for _, v := range vals {
		var st RateLimitStep
		if json.Unmarshal([]byte(v), &st) == nil {
			steps = append(steps, st)
		}
	}
	return steps
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
