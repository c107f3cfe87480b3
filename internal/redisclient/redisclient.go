// Package redisclient builds the go-redis clients of the stores replicas
// share (rate-limit counters, sessions and the other login state), so that
// all of them fail fast and never retry the same way.
package redisclient

import (
	"time"

	"github.com/redis/go-redis/v9"
)

// New returns a client of the Redis at addr. It connects lazily: no I/O
// happens here. timeout bounds dialling, each read and write and the wait
// for a pooled connection.
func New(addr, password string, db int, timeout time.Duration) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:                  addr,
		Password:              password,
		DB:                    db,
		DialTimeout:           timeout,
		ReadTimeout:           timeout,
		WriteTimeout:          timeout,
		PoolTimeout:           timeout,
		ContextTimeoutEnabled: true,
		// A retry would double the worst case, and a retried Lua script
		// could run twice.
		MaxRetries: -1,
		// go-redis retries failed dials 5 times, 100ms apart, by default:
		// that alone would be a 0.5s stall per request with Redis down.
		DialerRetries:      1,
		DialerRetryBackoff: func(int) time.Duration { return time.Millisecond },
		PoolSize:           64,
		MinIdleConns:       4,
		DisableIdentity:    true,
	})
}
