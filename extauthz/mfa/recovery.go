package mfa

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// RecoveryCodeCount is how many recovery codes an enrolment gets.
const RecoveryCodeCount = 10

// RecoveryCodes keeps users' TOTP recovery codes, hashed: each logs in
// once in place of a TOTP code (a lost phone), and a new enrolment
// replaces them all. The codes themselves are shown once, at enrolment.
type RecoveryCodes interface {
	// Replace makes hashes the user's codes.
	Replace(ctx context.Context, user string, hashes []string) error
	// Use consumes the code with this hash; false when the user has none
	// such (never issued, or used). Of two concurrent calls with one code,
	// at most one succeeds.
	Use(ctx context.Context, user, hash string) (bool, error)
	// Remaining counts the user's unused codes.
	Remaining(ctx context.Context, user string) (int, error)
}

// NewRecoveryCodes makes RecoveryCodeCount codes (xxxxx-xxxxx, 50 bits
// each) for user and their hashes.
func NewRecoveryCodes(user string) (codes, hashes []string, err error) {
	for range RecoveryCodeCount {
		var b [7]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, nil, err
		}
		s := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))[:10]
		code := s[:5] + "-" + s[5:]
		codes = append(codes, code)
		hashes = append(hashes, RecoveryHash(user, code))
	}
	return codes, hashes, nil
}

// RecoveryHash is the stored form of a user's recovery code: case,
// spaces and dashes do not matter.
func RecoveryHash(user, code string) string {
	c := strings.Map(func(r rune) rune {
		switch r {
		case '-', ' ':
			return -1
		}
		return r
	}, strings.ToLower(strings.TrimSpace(code)))
	sum := sha256.Sum256([]byte("kailash-recovery\x00" + user + "\x00" + c))
	return hex.EncodeToString(sum[:])
}

// MemoryRecoveryCodes is the in-process RecoveryCodes.
type MemoryRecoveryCodes struct {
	mu    sync.Mutex
	users map[string]map[string]bool
}

// NewMemoryRecoveryCodes returns an empty store.
func NewMemoryRecoveryCodes() *MemoryRecoveryCodes {
	return &MemoryRecoveryCodes{users: map[string]map[string]bool{}}
}

// Replace implements RecoveryCodes.
func (m *MemoryRecoveryCodes) Replace(_ context.Context, user string, hashes []string) error {
	set := make(map[string]bool, len(hashes))
	for _, h := range hashes {
		set[h] = true
	}
	m.mu.Lock()
	m.users[user] = set
	m.mu.Unlock()
	return nil
}

// Use implements RecoveryCodes.
func (m *MemoryRecoveryCodes) Use(_ context.Context, user, hash string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.users[user][hash] {
		return false, nil
	}
	delete(m.users[user], hash)
	return true, nil
}

// Remaining implements RecoveryCodes.
func (m *MemoryRecoveryCodes) Remaining(_ context.Context, user string) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.users[user]), nil
}

// RedisRecoveryCodes keeps the codes in a Redis set per user (SREM makes a
// use single even across replicas).
type RedisRecoveryCodes struct {
	c      *redis.Client
	prefix string
}

// NewRedisRecoveryCodes stores under prefix (default kailash:mfa:recovery:).
func NewRedisRecoveryCodes(c *redis.Client, prefix string) *RedisRecoveryCodes {
	if prefix == "" {
		prefix = "kailash:mfa:recovery:"
	}
	return &RedisRecoveryCodes{c: c, prefix: prefix}
}

// Replace implements RecoveryCodes.
func (r *RedisRecoveryCodes) Replace(ctx context.Context, user string, hashes []string) error {
	key := r.prefix + user
	_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, key)
		if len(hashes) > 0 {
			members := make([]any, len(hashes))
			for i, h := range hashes {
				members[i] = h
			}
			p.SAdd(ctx, key, members...)
		}
		return nil
	})
	return err
}

// Use implements RecoveryCodes.
func (r *RedisRecoveryCodes) Use(ctx context.Context, user, hash string) (bool, error) {
	n, err := r.c.SRem(ctx, r.prefix+user, hash).Result()
	return n == 1, err
}

// Remaining implements RecoveryCodes.
func (r *RedisRecoveryCodes) Remaining(ctx context.Context, user string) (int, error) {
	n, err := r.c.SCard(ctx, r.prefix+user).Result()
	return int(n), err
}
