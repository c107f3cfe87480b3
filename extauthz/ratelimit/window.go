package ratelimit

import (
	"context"
	"errors"
	"time"
)

// Backend counts hits in sliding windows.
type Backend interface {
	// Take decides whether hits more fit under limit in key's sliding window
	// ending at now, and counts them if they do. An error means the counters
	// could not be reached: the caller applies the fail mode.
	Take(ctx context.Context, key string, limit uint64, window time.Duration, hits uint64, now time.Time) (Result, error)
}

// Result is one decision.
type Result struct {
	Allowed bool
	// Used is the window's estimated count, including these hits if allowed.
	Used uint64
	// Reset is how long until the current fixed window ends.
	Reset time.Duration
}

// ErrUnavailable is returned while the counter store is known to be down.
var ErrUnavailable = errors.New("ratelimit: counter store unavailable")

// slot is where now falls: the index of its fixed window, and the weight
// (in millionths) the previous window still has in the sliding window.
func slot(now time.Time, window time.Duration) (idx int64, prevWeight uint64, reset time.Duration) {
	ns := now.UnixNano()
	w := int64(window)
	idx = ns / w
	elapsed := ns % w
	prevWeight = uint64((w - elapsed) / (w / 1_000_000))
	if prevWeight > 1_000_000 {
		prevWeight = 1_000_000
	}
	return idx, prevWeight, time.Duration(w - elapsed)
}

// estimate is the sliding-window count: the previous window's count scaled
// by the part of it still inside the window, plus the current count. Both
// backends use exactly this formula (the Redis script in integers too).
func estimate(prev, cur, prevWeight uint64) uint64 {
	return prev*prevWeight/1_000_000 + cur
}
