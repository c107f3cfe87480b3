package extauthz

import (
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kailash-gw/kailash/extauthz/lockout"
	"github.com/kailash-gw/kailash/extauthz/mfa"
	"github.com/kailash-gw/kailash/extauthz/samlsp"
	"github.com/kailash-gw/kailash/extauthz/session"
	"github.com/kailash-gw/kailash/internal/config"
)

// sharedStores are the stores of the login service: in memory (one
// replica), or all in one Redis (sessions.redis) so that replicas share
// sessions, signing keys, brute-force counters, used TOTP steps and used
// SAML assertion IDs. Every Redis key starts with "kailash:".
type sharedStores struct {
	client   *redis.Client // nil in memory
	keys     session.KeyStore
	sessions session.Store
	lockout  lockout.Store
	used     mfa.UsedSteps
	replay   samlsp.ReplayStore
}

func newSharedStores(rc *config.Redis, now func() time.Time) (sharedStores, error) {
	if rc == nil {
		return sharedStores{
			sessions: session.NewMemoryStore(), lockout: lockout.NewMemoryStore(now),
			used: mfa.NewMemoryUsedSteps(), replay: samlsp.NewMemoryReplayStore(0),
		}, nil
	}
	pw, err := rc.Password()
	if err != nil {
		return sharedStores{}, err
	}
	timeout := rc.Timeout
	if timeout <= 0 {
		timeout = config.DefaultSessionsRedisTimeout
	}
	c := redis.NewClient(&redis.Options{
		Addr: rc.Addr, Password: pw, DB: rc.DB,
		DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout, PoolTimeout: timeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1, // a retried Lua script could run twice
		DialerRetries:         1,
		DialerRetryBackoff:    func(int) time.Duration { return time.Millisecond },
		PoolSize:              64,
		MinIdleConns:          4,
		DisableIdentity:       true,
	})
	return sharedStores{
		client:   c,
		keys:     session.NewRedisKeyStore(c, ""),
		sessions: session.NewRedisStore(c, ""),
		lockout:  lockout.NewRedisStore(c, "", now),
		used:     mfa.NewRedisUsedSteps(c, "", 0),
		replay:   samlsp.NewRedisReplayStore(c, ""),
	}, nil
}

func (s sharedStores) close() {
	if s.client != nil {
		_ = s.client.Close()
	}
}
