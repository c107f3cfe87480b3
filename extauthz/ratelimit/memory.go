package ratelimit

import (
	"context"
	"hash/maphash"
	"sync"
	"time"
)

const memoryShards = 64

// Memory is the in-process Backend: counters live in this process only.
// It is safe for concurrent use.
type Memory struct {
	seed   maphash.Seed
	shards [memoryShards]memShard
}

type memShard struct {
	mu sync.Mutex // guards m and swept
	m  map[string]*memCounter
	// swept is len(m) after the last sweep; the next sweep runs when m has
	// doubled, so stale keys cost O(1) amortised.
	swept int
}

type memCounter struct {
	idx       int64 // fixed window of cur
	window    time.Duration
	prev, cur uint64
}

// NewMemory returns an empty in-memory backend.
func NewMemory() *Memory {
	m := &Memory{seed: maphash.MakeSeed()}
	for i := range m.shards {
		m.shards[i].m = map[string]*memCounter{}
	}
	return m
}

var _ Backend = (*Memory)(nil)

// Take implements Backend.
func (m *Memory) Take(_ context.Context, key string, limit uint64, window time.Duration, hits uint64, now time.Time) (Result, error) {
	idx, w, reset := slot(now, window)
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
	c.roll(idx)
	used := estimate(c.prev, c.cur, w)
	if used+hits > limit {
		return Result{Allowed: false, Used: used, Reset: reset}, nil
	}
	c.cur += hits
	return Result{Allowed: true, Used: used + hits, Reset: reset}, nil
}

// roll moves the counter to window idx.
func (c *memCounter) roll(idx int64) {
	switch {
	case c.idx == idx:
	case c.idx == idx-1:
		c.prev, c.cur, c.idx = c.cur, 0, idx
	default:
		c.prev, c.cur, c.idx = 0, 0, idx
	}
}

// sweep drops counters whose windows no longer count. The caller holds mu.
func (sh *memShard) sweep(now time.Time) {
	for k, c := range sh.m {
		idx, _, _ := slot(now, c.window)
		if c.idx < idx-1 {
			delete(sh.m, k)
		}
	}
	sh.swept = len(sh.m)
}

// Len is the number of live counters (for tests and metrics).
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
