package samlsp

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisRequestPrefix starts every key of a RedisRequestStore.
const DefaultRedisRequestPrefix = "kailash:saml:req:"

// RedisRequestStore is the RequestStore shared by replicas: one sorted set
// per tenant (<prefix><tenant>) of request ids scored by their expiry
// (unix ms, by the caller's clock), whose key expires with its last
// request. Remember (drop expired, count,
// add) and Take (check and remove) are Lua scripts, so atomic on any Redis
// since 2.6.
type RedisRequestStore struct {
	c      redis.UniversalClient
	prefix string
	now    func() time.Time
}

var _ RequestStore = (*RedisRequestStore)(nil)

// NewRedisRequestStore returns a store in c under prefix ("":
// DefaultRedisRequestPrefix) on clock now (nil: time.Now), which decides
// expiry (replicas' clocks agree to well within a request's lifetime).
func NewRedisRequestStore(c redis.UniversalClient, prefix string, now func() time.Time) *RedisRequestStore {
	if prefix == "" {
		prefix = DefaultRedisRequestPrefix
	}
	if now == nil {
		now = time.Now
	}
	return &RedisRequestStore{c: c, prefix: prefix, now: now}
}

// rememberScript: KEYS the tenant's set; ARGV now (ms), until (ms), max,
// id. Returns 1 if added, 0 when the tenant is at max.
var rememberScript = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.max(1, math.floor(tonumber(last[2]) - tonumber(ARGV[1]))))
return 1
`)

// takeScript: KEYS the tenant's set; ARGV now (ms), id. Returns 1 if the
// id was there unexpired; removes it either way.
var takeScript = redis.NewScript(`
local exp = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not exp then return 0 end
redis.call('ZREM', KEYS[1], ARGV[2])
if tonumber(exp) > tonumber(ARGV[1]) then return 1 end
return 0
`)

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// Remember implements RequestStore.
func (s *RedisRequestStore) Remember(ctx context.Context, tenant, id string, until time.Time, max int) error {
	if max <= 0 {
		max = DefaultMaxPendingRequests
	}
	now := s.now()
	if until.Sub(now) < time.Millisecond {
		return nil // already expired: nothing to remember
	}
	n, err := rememberScript.Run(ctx, s.c, []string{s.prefix + tenant}, ms(now), ms(until), max, id).Int()
	if err != nil {
		return fmt.Errorf("saml: request store: %w", err)
	}
	if n == 0 {
		return ErrTooManyRequests
	}
	return nil
}

// Take implements RequestStore.
func (s *RedisRequestStore) Take(ctx context.Context, tenant, id string) (bool, error) {
	n, err := takeScript.Run(ctx, s.c, []string{s.prefix + tenant}, ms(s.now()), id).Int()
	if err != nil {
		return false, fmt.Errorf("saml: request store: %w", err)
	}
	return n == 1, nil
}
