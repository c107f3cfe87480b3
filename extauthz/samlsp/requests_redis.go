package samlsp

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisRequestPrefix starts every key of a RedisRequestStore.
const DefaultRedisRequestPrefix = "kailash:saml:req:"

// RedisRequestStore is the RequestStore shared by replicas: one key per
// request id holding its tenant, expiring with the request; Take is an
// atomic GET and DEL (a Lua script, so any Redis since 2.6 will do).
type RedisRequestStore struct {
	c      redis.UniversalClient
	prefix string
	now    func() time.Time
}

var _ RequestStore = (*RedisRequestStore)(nil)

// NewRedisRequestStore returns a store in c under prefix ("":
// DefaultRedisRequestPrefix) on clock now (nil: time.Now), which only
// turns Remember's until into a TTL.
func NewRedisRequestStore(c redis.UniversalClient, prefix string, now func() time.Time) *RedisRequestStore {
	if prefix == "" {
		prefix = DefaultRedisRequestPrefix
	}
	if now == nil {
		now = time.Now
	}
	return &RedisRequestStore{c: c, prefix: prefix, now: now}
}

// Remember implements RequestStore.
func (s *RedisRequestStore) Remember(ctx context.Context, id, tenant string, until time.Time) error {
	ttl := until.Sub(s.now())
	if ttl < time.Millisecond {
		return nil // already expired: nothing to remember
	}
	if err := s.c.Set(ctx, s.prefix+id, tenant, ttl).Err(); err != nil {
		return fmt.Errorf("saml: request store: %w", err)
	}
	return nil
}

// takeScript: GETDEL for every Redis version.
var takeScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then redis.call('DEL', KEYS[1]) end
return v
`)

// Take implements RequestStore.
func (s *RedisRequestStore) Take(ctx context.Context, id string) (string, bool, error) {
	v, err := takeScript.Run(ctx, s.c, []string{s.prefix + id}).Text()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("saml: request store: %w", err)
	}
	return v, true, nil
}
