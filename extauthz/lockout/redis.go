package lockout

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisPrefix starts every key of a RedisStore.
const DefaultRedisPrefix = "kailash:lockout:"

// RedisStore is the Store shared by replicas: P c:<key> is a counter hash
// (n, and e: its end as zero-padded unix nanos), P l:<key> a lock (its end).
// Both carry a Redis TTL (their end plus a minute), so nothing lives
// forever; the ends themselves are judged on the store's clock, like
// MemoryStore's.
type RedisStore struct {
	c      redis.UniversalClient
	prefix string
	now    func() time.Time
}

var _ Store = (*RedisStore)(nil)

// NewRedisStore returns a store in c under prefix ("": DefaultRedisPrefix)
// on the given clock (nil: time.Now).
func NewRedisStore(c redis.UniversalClient, prefix string, now func() time.Time) *RedisStore {
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	if now == nil {
		now = time.Now
	}
	return &RedisStore{c: c, prefix: prefix, now: now}
}

const redisMargin = time.Minute

// incrScript: KEYS[1] the counter. ARGV: now, end of a new counter, TTL ms.
var incrScript = redis.NewScript(`
local e = redis.call('HGET', KEYS[1], 'e')
if not e or ARGV[1] >= e then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'e', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return redis.call('HINCRBY', KEYS[1], 'n', 1)
`)

func nanos(t time.Time) string { return fmt.Sprintf("%020d", t.UnixNano()) }

// Incr implements Store.
func (r *RedisStore) Incr(ctx context.Context, key string, window time.Duration) (int, error) {
	now := r.now()
	n, err := incrScript.Run(ctx, r.c, []string{r.prefix + "c:" + key},
		nanos(now), nanos(now.Add(window)), (window + redisMargin).Milliseconds()).Int()
	if err != nil {
		return 0, fmt.Errorf("redis: %w", err)
	}
	return n, nil
}

// Lock implements Store.
func (r *RedisStore) Lock(ctx context.Context, key string, until time.Time) error {
	k := r.prefix + "l:" + key
	d := until.Sub(r.now())
	var err error
	if d <= 0 {
		err = r.c.Del(ctx, k).Err()
	} else {
		err = r.c.Set(ctx, k, strconv.FormatInt(until.UnixNano(), 10), d+redisMargin).Err()
	}
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

// LockedUntil implements Store.
func (r *RedisStore) LockedUntil(ctx context.Context, key string) (time.Time, error) {
	v, err := r.c.Get(ctx, r.prefix+"l:"+key).Result()
	if errors.Is(err, redis.Nil) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("redis: %w", err)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("redis: corrupt lock %q", v)
	}
	until := time.Unix(0, n)
	if !r.now().Before(until) {
		return time.Time{}, nil
	}
	return until, nil
}

// Reset implements Store.
func (r *RedisStore) Reset(ctx context.Context, key string) error {
	if err := r.c.Del(ctx, r.prefix+"c:"+key).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}
