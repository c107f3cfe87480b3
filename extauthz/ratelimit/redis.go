package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kailash-gw/kailash/internal/redisclient"
)

// slidingScript decides and counts atomically. KEYS: current window,
// previous window. ARGV: limit, hits, previous window weight (millionths),
// TTL in ms. Returns {allowed (0/1), used}. The arithmetic is estimate's.
var slidingScript = redis.NewScript(`
local limit = tonumber(ARGV[1])
local hits = tonumber(ARGV[2])
local w = tonumber(ARGV[3])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local used = math.floor(prev * w / 1000000) + cur
if used + hits > limit then
  return {0, used}
end
local n = redis.call('INCRBY', KEYS[1], hits)
if n == hits then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return {1, used + hits}
`)

// RedisOptions configure the Redis backend.
type RedisOptions struct {
	Addr     string
	Password string
	DB       int
	// Timeout bounds dialling and each read and write (default 25ms).
	Timeout time.Duration
	// Prefix starts every key (default "kailash:rl:").
	Prefix string
	// BreakAfter consecutive failures open the circuit for Cooldown
	// (defaults 3 and 1s): while open, Take fails at once without I/O; then
	// one probe is let through.
	BreakAfter int
	Cooldown   time.Duration
	// OnStateChange is called when the circuit opens or closes.
	OnStateChange func(open bool, err error)
}

// Redis is the Backend shared by replicas: counters in one Redis.
type Redis struct {
	c      *redis.Client
	prefix string
	br     breaker
}

var _ Backend = (*Redis)(nil)

// NewRedis connects lazily: no I/O happens here.
func NewRedis(o RedisOptions) *Redis {
	if o.Timeout <= 0 {
		o.Timeout = 25 * time.Millisecond
	}
	if o.Prefix == "" {
		o.Prefix = "kailash:rl:"
	}
	if o.BreakAfter <= 0 {
		o.BreakAfter = 3
	}
	if o.Cooldown <= 0 {
		o.Cooldown = time.Second
	}
	c := redisclient.New(o.Addr, o.Password, o.DB, o.Timeout)
	return &Redis{c: c, prefix: o.Prefix, br: breaker{after: o.BreakAfter, cooldown: o.Cooldown, notify: o.OnStateChange}}
}

// Close closes the connection pool.
func (r *Redis) Close() error { return r.c.Close() }

// Ping checks the connection (for readiness).
func (r *Redis) Ping(ctx context.Context) error { return r.c.Ping(ctx).Err() }

// Take implements Backend.
func (r *Redis) Take(ctx context.Context, key string, limit uint64, window time.Duration, hits uint64, now time.Time) (Result, error) {
	if !r.br.allow(now) {
		return Result{}, ErrUnavailable
	}
	idx, w, reset := slot(now, window)
	// The hash tag keeps both windows of a key in one Redis Cluster slot.
	base := r.prefix + "{" + key + "}:"
	keys := []string{base + strconv.FormatInt(idx, 10), base + strconv.FormatInt(idx-1, 10)}
	ttl := (2 * window).Milliseconds()
	v, err := slidingScript.Run(ctx, r.c, keys, limit, hits, w, ttl).Int64Slice()
	if err != nil {
		r.br.failure(now, err)
		return Result{}, fmt.Errorf("ratelimit: redis: %w", err)
	}
	r.br.success()
	if len(v) != 2 || v[1] < 0 {
		return Result{}, errors.New("ratelimit: redis: unexpected script result")
	}
	return Result{Allowed: v[0] == 1, Used: uint64(v[1]), Reset: reset}, nil
}

// breaker is a consecutive-failure circuit breaker.
type breaker struct {
	after    int
	cooldown time.Duration
	notify   func(open bool, err error)

	mu        sync.Mutex // guards the fields below
	failures  int
	openUntil time.Time // zero when closed
	probing   bool      // a half-open probe is in flight
}

// allow reports whether a call may go to Redis.
func (b *breaker) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.openUntil.IsZero() {
		return true
	}
	if now.Before(b.openUntil) || b.probing {
		return false
	}
	b.probing = true // half open: one probe
	return true
}

func (b *breaker) failure(now time.Time, err error) {
	b.mu.Lock()
	b.failures++
	b.probing = false
	opened := false
	if b.failures >= b.after {
		opened = b.openUntil.IsZero()
		b.openUntil = now.Add(b.cooldown)
	}
	b.mu.Unlock()
	if opened && b.notify != nil {
		b.notify(true, err)
	}
}

func (b *breaker) success() {
	b.mu.Lock()
	closed := !b.openUntil.IsZero()
	b.failures, b.openUntil, b.probing = 0, time.Time{}, false
	b.mu.Unlock()
	if closed && b.notify != nil {
		b.notify(false, nil)
	}
}
