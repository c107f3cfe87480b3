// Package mfa is time-based one-time passwords (RFC 6238) for the login
// flow: enrolment hands out a secret and its otpauth:// URI, verification
// accepts the current code and one step either side, and a code (or an
// older one) is never accepted twice for the same user.
package mfa

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// Verification errors. Both mean "wrong code" to the client.
var (
	ErrInvalidCode = errors.New("mfa: invalid code")
	// ErrCodeReused: the code was right but its time step (or a later one)
	// was already used: a replay, or a second login within the same step.
	ErrCodeReused = errors.New("mfa: code already used")
)

// Config tunes a TOTP. Zero fields take the defaults, which are what
// authenticator apps assume (30s, 6 digits, SHA-1).
type Config struct {
	// Issuer names us in the authenticator app (e.g. "Kailash (acme)").
	Issuer string
	// Period is the step length (default 30s); Skew is how many steps either
	// side are accepted (default 1; negative for none).
	Period time.Duration
	Skew   int
	// Digits is 6 or 8 (default 6).
	Digits int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// UsedSteps remembers, per user, the last time step whose code was
// accepted. Use must be atomic (compare-and-set), also in Redis.
type UsedSteps interface {
	// Use records step for user if it is later than the last used step
	// and reports whether it was.
	Use(ctx context.Context, user string, step int64) (bool, error)
}

// TOTP enrols and verifies. It is safe for concurrent use.
type TOTP struct {
	cfg  Config
	opts totp.ValidateOpts
	used UsedSteps
}

// New returns a TOTP that records used steps in used (nil: in memory).
func New(cfg Config, used UsedSteps) (*TOTP, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("mfa: issuer is required")
	}
	if cfg.Period == 0 {
		cfg.Period = 30 * time.Second
	}
	if cfg.Period < time.Second || cfg.Period%time.Second != 0 {
		return nil, fmt.Errorf("mfa: period %s must be whole seconds", cfg.Period)
	}
	if cfg.Skew == 0 {
		cfg.Skew = 1
	}
	if cfg.Skew < 0 {
		cfg.Skew = 0
	}
	if cfg.Skew > 3 {
		return nil, fmt.Errorf("mfa: skew %d is more than 3 steps", cfg.Skew)
	}
	var digits otp.Digits
	switch cfg.Digits {
	case 0, 6:
		digits = otp.DigitsSix
	case 8:
		digits = otp.DigitsEight
	default:
		return nil, fmt.Errorf("mfa: digits must be 6 or 8, not %d", cfg.Digits)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if used == nil {
		used = NewMemoryUsedSteps()
	}
	return &TOTP{
		cfg:  cfg,
		opts: totp.ValidateOpts{Period: uint(cfg.Period / time.Second), Digits: digits, Algorithm: otp.AlgorithmSHA1},
		used: used,
	}, nil
}

// Enrollment is a new TOTP secret. Store Secret (encrypted) with the user;
// show URI as a QR code once. It never prints its contents in logs.
type Enrollment struct {
	Secret string // base32, no padding
	URI    string // otpauth://totp/Issuer:account?secret=...
}

// String redacts: both fields carry the secret.
func (e Enrollment) String() string { return "mfa.Enrollment{[redacted]}" }

// LogValue redacts.
func (e Enrollment) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Enroll creates a secret (160 random bits) for account (the username).
// Confirm the enrolment by verifying a first code before relying on it.
func (t *TOTP) Enroll(account string) (Enrollment, error) {
	if account == "" {
		return Enrollment{}, errors.New("mfa: account is required")
	}
	key, err := totp.Generate(totp.GenerateOpts{
		Issuer: t.cfg.Issuer, AccountName: account, Period: t.opts.Period,
		SecretSize: 20, Digits: t.opts.Digits, Algorithm: t.opts.Algorithm,
	})
	if err != nil {
		return Enrollment{}, fmt.Errorf("mfa: %w", err)
	}
	return Enrollment{Secret: key.Secret(), URI: key.URL()}, nil
}

// Verify checks code for user, whose secret is secret. It accepts the codes
// of the current step and Skew steps either side, then records the step so
// that neither this code nor an older one is accepted again.
func (t *TOTP) Verify(ctx context.Context, user, secret, code string) error {
	if !t.wellFormed(code) {
		return ErrInvalidCode
	}
	period := int64(t.opts.Period)
	now := t.cfg.Now().Unix() / period
	// Newest first: if two steps share a code, prefer the one that leaves
	// fewer codes usable.
	var matched []int64
	for d := int64(t.cfg.Skew); d >= -int64(t.cfg.Skew); d-- {
		step := now + d
		want, err := totp.GenerateCodeCustom(secret, time.Unix(step*period, 0), t.opts)
		if err != nil {
			return fmt.Errorf("mfa: stored secret: %w", err)
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			matched = append(matched, step)
		}
	}
	if len(matched) == 0 {
		return ErrInvalidCode
	}
	ok, err := t.used.Use(ctx, user, matched[0])
	if err != nil {
		return fmt.Errorf("mfa: %w", err)
	}
	if !ok {
		return ErrCodeReused
	}
	return nil
}

func (t *TOTP) wellFormed(code string) bool {
	if len(code) != t.opts.Digits.Length() {
		return false
	}
	for i := 0; i < len(code); i++ {
		if code[i] < '0' || code[i] > '9' {
			return false
		}
	}
	return true
}

// Requirement says who must present a second factor: everyone of the
// tenant, or anyone holding one of Roles.
type Requirement struct {
	All   bool
	Roles []string
}

// Applies reports whether a user with these roles needs MFA.
func (r Requirement) Applies(roles []string) bool {
	if r.All {
		return true
	}
	for _, role := range roles {
		if slices.Contains(r.Roles, role) {
			return true
		}
	}
	return false
}

// MemoryUsedSteps is the in-process UsedSteps.
type MemoryUsedSteps struct {
	mu   sync.Mutex // guards last
	last map[string]int64
}

// NewMemoryUsedSteps returns an empty store.
func NewMemoryUsedSteps() *MemoryUsedSteps { return &MemoryUsedSteps{last: map[string]int64{}} }

var _ UsedSteps = (*MemoryUsedSteps)(nil)

// Use implements UsedSteps.
func (m *MemoryUsedSteps) Use(_ context.Context, user string, step int64) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if last, ok := m.last[user]; ok && step <= last {
		return false, nil
	}
	m.last[user] = step
	return true, nil
}
