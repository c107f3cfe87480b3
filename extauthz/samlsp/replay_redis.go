package samlsp

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisReplayPrefix starts every key of a RedisReplayStore.
const DefaultRedisReplayPrefix = "kailash:saml:replay:"

// RedisReplayStore is the ReplayStore shared by replicas: SET NX PX, one key
// per assertion ID, expiring when the assertion does.
type RedisReplayStore struct {
	c      redis.UniversalClient
	prefix string
	now    func() time.Time
}

var _ ReplayStore = (*RedisReplayStore)(nil)

// NewRedisReplayStore returns a store in c under prefix ("":
// DefaultRedisReplayPrefix).
func NewRedisReplayStore(c redis.UniversalClient, prefix string) *RedisReplayStore {
	if prefix == "" {
		prefix = DefaultRedisReplayPrefix
	}
	return &RedisReplayStore{c: c, prefix: prefix, now: time.Now}
}

// Consume implements ReplayStore.
func (s *RedisReplayStore) Consume(ctx context.Context, id string, until time.Time) error {
	ttl := until.Sub(s.now())
	if ttl < time.Millisecond {
		ttl = time.Millisecond // already expired: nothing to remember
	}
	ok, err := s.c.SetNX(ctx, s.prefix+id, "1", ttl).Result()
	if err != nil {
		return fmt.Errorf("saml: replay store: %w", err)
	}
	if !ok {
		return ErrReplayed
	}
	return nil
}
