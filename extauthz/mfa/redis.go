package mfa

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisPrefix starts every key of a RedisUsedSteps.
const DefaultRedisPrefix = "kailash:totp:"

// DefaultUsedStepsTTL is how long a RedisUsedSteps remembers a user's last
// step. It must exceed (2*Skew+1)*Period (at most 7 steps): after that no
// code of the remembered step (or an older one) verifies anyway.
const DefaultUsedStepsTTL = 10 * time.Minute

// RedisUsedSteps is the UsedSteps shared by replicas: P<user> holds the
// last used step; Use is a compare-and-set Lua script.
type RedisUsedSteps struct {
	c      redis.UniversalClient
	prefix string
	ttl    time.Duration
}

var _ UsedSteps = (*RedisUsedSteps)(nil)

// NewRedisUsedSteps returns a store in c under prefix ("":
// DefaultRedisPrefix) remembering steps for ttl (0: DefaultUsedStepsTTL).
func NewRedisUsedSteps(c redis.UniversalClient, prefix string, ttl time.Duration) *RedisUsedSteps {
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	if ttl <= 0 {
		ttl = DefaultUsedStepsTTL
	}
	return &RedisUsedSteps{c: c, prefix: prefix, ttl: ttl}
}

// useScript: KEYS[1] the user. ARGV: step, TTL ms. Returns 1 if recorded.
var useScript = redis.NewScript(`
local last = redis.call('GET', KEYS[1])
if last and tonumber(ARGV[1]) <= tonumber(last) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

// Use implements UsedSteps.
func (r *RedisUsedSteps) Use(ctx context.Context, user string, step int64) (bool, error) {
	n, err := useScript.Run(ctx, r.c, []string{r.prefix + user}, step, r.ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("redis: %w", err)
	}
	return n == 1, nil
}
