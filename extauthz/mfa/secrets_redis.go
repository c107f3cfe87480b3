package mfa

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisSecretsPrefix starts every key of a RedisSecrets:
// <prefix>secret:<user> holds the enrolled secret, <prefix>pending:<user>
// the enrolment awaiting its first code (with its TTL). Both are sealed.
const DefaultRedisSecretsPrefix = "kailash:mfa:"

// RedisSecrets is the SecretStore shared by replicas. Secrets are sealed
// (AES-256-GCM, see Sealer) before they reach Redis. An enrolled secret has
// no TTL: expiring it would un-enrol the user, and an un-enrolled user
// enrols again with the password alone.
type RedisSecrets struct {
	c      redis.UniversalClient
	prefix string
	seal   *Sealer
}

var _ SecretStore = (*RedisSecrets)(nil)

// NewRedisSecrets returns a store in c under prefix ("":
// DefaultRedisSecretsPrefix) sealing with seal (required).
func NewRedisSecrets(c redis.UniversalClient, prefix string, seal *Sealer) (*RedisSecrets, error) {
	if seal == nil {
		return nil, errors.New("mfa: a Redis secret store needs a sealing key")
	}
	if prefix == "" {
		prefix = DefaultRedisSecretsPrefix
	}
	return &RedisSecrets{c: c, prefix: prefix, seal: seal}, nil
}

func (r *RedisSecrets) keys(user string) (secret, pending string) {
	return r.prefix + "secret:" + user, r.prefix + "pending:" + user
}

// Load implements SecretStore.
func (r *RedisSecrets) Load(ctx context.Context, user string) (UserSecrets, error) {
	ks, kp := r.keys(user)
	vals, err := r.c.MGet(ctx, ks, kp).Result()
	if err != nil {
		return UserSecrets{}, fmt.Errorf("mfa: redis: %w", err)
	}
	var s UserSecrets
	if v, ok := vals[0].(string); ok {
		if s.Secret, err = r.seal.Open(user, []byte(v)); err != nil {
			return UserSecrets{}, fmt.Errorf("mfa: enrolled secret: %w", err)
		}
	}
	if v, ok := vals[1].(string); ok {
		if s.Pending, err = r.seal.Open(user, []byte(v)); err != nil {
			return UserSecrets{}, fmt.Errorf("mfa: pending secret: %w", err)
		}
		s.ref = v
	}
	return s, nil
}

// Begin implements SecretStore.
func (r *RedisSecrets) Begin(ctx context.Context, user, secret string, ttl time.Duration) error {
	if ttl < time.Millisecond {
		return errors.New("mfa: a pending enrolment needs a TTL")
	}
	sealed, err := r.seal.Seal(user, secret)
	if err != nil {
		return err
	}
	_, kp := r.keys(user)
	if err := r.c.Set(ctx, kp, sealed, ttl).Err(); err != nil {
		return fmt.Errorf("mfa: redis: %w", err)
	}
	return nil
}

// confirmScript: KEYS pending, secret; ARGV[1] the sealed pending secret
// Load saw. Moves it to the enrolled secret (no TTL) if it is still the
// pending one. Returns 1 if moved.
var confirmScript = redis.NewScript(`
local p = redis.call('GET', KEYS[1])
if not p or p ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], p)
redis.call('DEL', KEYS[1])
return 1
`)

// Confirm implements SecretStore. The sealed bytes move as they are: the
// seal binds the user, not the slot.
func (r *RedisSecrets) Confirm(ctx context.Context, user string, s UserSecrets) (bool, error) {
	if s.ref == "" {
		return false, nil
	}
	ks, kp := r.keys(user)
	n, err := confirmScript.Run(ctx, r.c, []string{kp, ks}, s.ref).Int()
	if err != nil {
		return false, fmt.Errorf("mfa: redis: %w", err)
	}
	return n == 1, nil
}
