package ratelimit

import (
	"context"
	"fmt"
	"hash/maphash"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// FixedBackend counts in fixed windows, as envoyproxy/ratelimit does: the
// hits are always added, and the caller compares the count after them with
// the limit. It backs limits loaded from envoyproxy/ratelimit files.
type FixedBackend interface {
	// Incr adds hits to key's fixed window of length window containing
	// now, and returns the count after them and the time until the window
	// ends.
	Incr(ctx context.Context, key string, window time.Duration, hits uint64, now time.Time) (after uint64, reset time.Duration, err error)
}

func fixedSlot(now time.Time, window time.Duration) (idx int64, reset time.Duration) {
	ns, w := now.UnixNano(), int64(window)
	return ns / w, time.Duration(w - ns%w)
}

var _ FixedBackend = (*Memory)(nil)

// Incr implements FixedBackend. Fixed-window counters share the shards of
// the sliding ones under a distinct key ("fixed|" prefix).
func (m *Memory) Incr(_ context.Context, key string, window time.Duration, hits uint64, now time.Time) (uint64, time.Duration, error) {
	idx, reset := fixedSlot(now, window)
	key = "fixed|" + key
	sh := &m.shards[maphash.String(m.seed, key)%memoryShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	c := sh.m[key]
	if c == nil {
		c = &memCounter{idx: idx, window: window}
		sh.m[key] = c
		if len(sh.m) > 2*sh.swept+128 {
			sh.sweep(now)
		}
	}
	if c.idx != idx {
		c.prev, c.cur, c.idx = 0, 0, idx
	}
	c.cur += hits
	return c.cur, reset, nil
}

// fixedScript adds the hits and sets the window's expiry on first use.
// KEYS: the window's counter. ARGV: hits, TTL in ms. Returns the count.
var fixedScript = redis.NewScript(`
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n == tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return n
`)

var _ FixedBackend = (*Redis)(nil)

// Incr implements FixedBackend: key kailash:rls:{<key>}:<window index>,
// expiring with its window.
func (r *Redis) Incr(ctx context.Context, key string, window time.Duration, hits uint64, now time.Time) (uint64, time.Duration, error) {
	if !r.br.allow(now) {
		return 0, 0, ErrUnavailable
	}
	idx, reset := fixedSlot(now, window)
	k := r.prefix + "fixed:{" + key + "}:" + strconv.FormatInt(idx, 10)
	n, err := fixedScript.Run(ctx, r.c, []string{k}, hits, window.Milliseconds()).Int64()
	if err != nil {
		r.br.failure(now, err)
		return 0, 0, fmt.Errorf("ratelimit: redis: %w", err)
	}
	r.br.success()
	if n < 0 {
		return 0, 0, fmt.Errorf("ratelimit: redis: negative count %d", n)
	}
	return uint64(n), reset, nil
}
