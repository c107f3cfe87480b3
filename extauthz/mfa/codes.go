package mfa

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Enrolment codes: with admin-provisioned enrolment an administrator
// issues a one-time code for a user, and only a user who shows the code
// (with the password) may enrol a TOTP secret. The admin never sees the
// secret; the user never enrols without the admin's say. A user has at
// most one code (a new one replaces it); codes are kept as SHA-256 hashes
// and expire.

// DefaultCodeTTL is how long an enrolment code may wait to be used.
const DefaultCodeTTL = 72 * time.Hour

// NewEnrolmentCode returns a fresh code: 20 random bytes (160 bits) in
// base32, grouped by 4 for reading aloud ("ABCD-EFGH-...").
func NewEnrolmentCode() (string, error) {
	var b [20]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	s := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
	var out strings.Builder
	for i := 0; i < len(s); i += 4 {
		if i > 0 {
			out.WriteByte('-')
		}
		out.WriteString(s[i:min(i+4, len(s))])
	}
	return out.String(), nil
}

// hashCode is the stored form of a code: the hash of its canonical
// spelling (upper case, without separators or spaces).
func hashCode(code string) string {
	c := strings.Map(func(r rune) rune {
		if r == '-' || r == ' ' {
			return -1
		}
		return r
	}, strings.ToUpper(strings.TrimSpace(code)))
	h := sha256.Sum256([]byte(c))
	return hex.EncodeToString(h[:])
}

// EnrolmentCodes keeps users' one-time enrolment codes.
type EnrolmentCodes interface {
	// Issue stores code as the user's enrolment code for ttl, replacing
	// any earlier one.
	Issue(ctx context.Context, user, code string, ttl time.Duration) error
	// Redeem consumes the user's code if it is code and unexpired, and
	// reports whether it was; a wrong code leaves the right one in place.
	// Of two concurrent redemptions of one code at most one succeeds.
	Redeem(ctx context.Context, user, code string) (bool, error)
}

// MemoryCodes is the in-process EnrolmentCodes.
type MemoryCodes struct {
	now func() time.Time

	mu    sync.Mutex // guards codes
	codes map[string]memCode
}

type memCode struct {
	hash  string
	until time.Time
}

var _ EnrolmentCodes = (*MemoryCodes)(nil)

// NewMemoryCodes returns an empty store on clock now (nil: time.Now).
func NewMemoryCodes(now func() time.Time) *MemoryCodes {
	if now == nil {
		now = time.Now
	}
	return &MemoryCodes{now: now, codes: map[string]memCode{}}
}

// Issue implements EnrolmentCodes.
func (m *MemoryCodes) Issue(_ context.Context, user, code string, ttl time.Duration) error {
	if ttl <= 0 {
		return errors.New("mfa: an enrolment code needs a TTL")
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, c := range m.codes {
		if !now.Before(c.until) {
			delete(m.codes, k)
		}
	}
	m.codes[user] = memCode{hash: hashCode(code), until: now.Add(ttl)}
	return nil
}

// Redeem implements EnrolmentCodes.
func (m *MemoryCodes) Redeem(_ context.Context, user, code string) (bool, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.codes[user]
	if !ok || !now.Before(c.until) || subtle.ConstantTimeCompare([]byte(c.hash), []byte(hashCode(code))) != 1 {
		return false, nil
	}
	delete(m.codes, user)
	return true, nil
}

// DefaultRedisCodesPrefix starts every key of a RedisCodes
// (<prefix><user> holds the code's hash, with its TTL).
const DefaultRedisCodesPrefix = "kailash:mfa:code:"

// RedisCodes is the EnrolmentCodes shared by replicas.
type RedisCodes struct {
	c      redis.UniversalClient
	prefix string
}

var _ EnrolmentCodes = (*RedisCodes)(nil)

// NewRedisCodes returns a store in c under prefix ("":
// DefaultRedisCodesPrefix).
func NewRedisCodes(c redis.UniversalClient, prefix string) *RedisCodes {
	if prefix == "" {
		prefix = DefaultRedisCodesPrefix
	}
	return &RedisCodes{c: c, prefix: prefix}
}

// Issue implements EnrolmentCodes.
func (r *RedisCodes) Issue(ctx context.Context, user, code string, ttl time.Duration) error {
	if ttl < time.Millisecond {
		return errors.New("mfa: an enrolment code needs a TTL")
	}
	if err := r.c.Set(ctx, r.prefix+user, hashCode(code), ttl).Err(); err != nil {
		return fmt.Errorf("mfa: redis: %w", err)
	}
	return nil
}

// redeemScript: KEYS the user's code; ARGV the hash shown. Deletes and
// returns 1 when it matches. (Hashes of 160-bit codes: comparing them in
// Lua leaks nothing useful.)
var redeemScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`)

// Redeem implements EnrolmentCodes.
func (r *RedisCodes) Redeem(ctx context.Context, user, code string) (bool, error) {
	n, err := redeemScript.Run(ctx, r.c, []string{r.prefix + user}, hashCode(code)).Int()
	if err != nil {
		return false, fmt.Errorf("mfa: redis: %w", err)
	}
	return n == 1, nil
}
