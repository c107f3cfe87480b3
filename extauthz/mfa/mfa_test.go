package mfa

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/kailash-gw/kailash/internal/testenv"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func setup(t *testing.T) (*TOTP, *clock, Enrollment) {
	t.Helper()
	// 10s into a 30s step.
	c := &clock{t: time.Unix(1_800_000_010, 0)}
	m, err := New(Config{Issuer: "Kailash", Now: c.Now}, newUsedSteps(t))
	if err != nil {
		t.Fatal(err)
	}
	e, err := m.Enroll("alice")
	if err != nil {
		t.Fatal(err)
	}
	return m, c, e
}

func code(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCode(secret, at)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestEnroll(t *testing.T) { testenv.MemoryAndRedis(t, testEnroll) }

func testEnroll(t *testing.T) {
	_, _, e := setup(t)
	u, err := url.Parse(e.URI)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if u.Scheme != "otpauth" || u.Host != "totp" || u.Path != "/Kailash:alice" {
		t.Errorf("uri = %s", e.URI)
	}
	if q.Get("secret") != e.Secret || q.Get("issuer") != "Kailash" || q.Get("digits") != "6" || q.Get("period") != "30" {
		t.Errorf("uri query = %v", q)
	}
	if len(e.Secret) != 32 { // 20 bytes base32
		t.Errorf("secret length %d", len(e.Secret))
	}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("enrolled", "enrollment", e)
	if s := fmt.Sprint(e) + b.String(); strings.Contains(s, e.Secret) {
		t.Errorf("enrollment printed its secret: %s", s)
	}
	m, _, _ := setup(t)
	e2, _ := m.Enroll("alice")
	if e2.Secret == e.Secret {
		t.Error("two enrolments share a secret")
	}
}

func TestVerifyWindow(t *testing.T) { testenv.MemoryAndRedis(t, testVerifyWindow) }

func testVerifyWindow(t *testing.T) {
	tests := []struct {
		name   string
		offset time.Duration // of the code's time from now
		want   error
	}{
		{"current step", 0, nil},
		{"previous step", -30 * time.Second, nil},
		{"next step", 30 * time.Second, nil},
		{"two steps old", -60 * time.Second, ErrInvalidCode},
		{"two steps ahead", 60 * time.Second, ErrInvalidCode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, c, e := setup(t)
			err := m.Verify(context.Background(), "alice", e.Secret, code(t, e.Secret, c.Now().Add(tt.offset)))
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestVerifyMalformed(t *testing.T) { testenv.MemoryAndRedis(t, testVerifyMalformed) }

func testVerifyMalformed(t *testing.T) {
	m, c, e := setup(t)
	good := code(t, e.Secret, c.Now())
	for _, bad := range []string{"", "12345", "1234567", "abcdef", " " + good[1:], good + "\x00", "１２３４５６"} {
		if err := m.Verify(context.Background(), "alice", e.Secret, bad); !errors.Is(err, ErrInvalidCode) {
			t.Errorf("%q: got %v", bad, err)
		}
	}
	// Another user's secret does not validate alice's code.
	other, _ := m.Enroll("bob")
	if err := m.Verify(context.Background(), "bob", other.Secret, good); !errors.Is(err, ErrInvalidCode) {
		t.Errorf("code for another secret: %v", err)
	}
}

func TestVerifyNoReuse(t *testing.T) { testenv.MemoryAndRedis(t, testVerifyNoReuse) }

func testVerifyNoReuse(t *testing.T) {
	m, c, e := setup(t)
	ctx := context.Background()
	now := code(t, e.Secret, c.Now())
	if err := m.Verify(ctx, "alice", e.Secret, now); err != nil {
		t.Fatal(err)
	}
	if err := m.Verify(ctx, "alice", e.Secret, now); !errors.Is(err, ErrCodeReused) {
		t.Fatalf("replayed code: %v", err)
	}
	// The previous step's code is still in the window but older than the
	// used step: refused as well.
	if err := m.Verify(ctx, "alice", e.Secret, code(t, e.Secret, c.Now().Add(-30*time.Second))); !errors.Is(err, ErrCodeReused) {
		t.Fatalf("older code after a newer one: %v", err)
	}
	// Another user is not affected by alice's used steps.
	bob, _ := m.Enroll("bob")
	if err := m.Verify(ctx, "bob", bob.Secret, code(t, bob.Secret, c.Now())); err != nil {
		t.Fatalf("bob: %v", err)
	}
	// The next step's code works once the clock gets there.
	c.Add(30 * time.Second)
	if err := m.Verify(ctx, "alice", e.Secret, code(t, e.Secret, c.Now())); err != nil {
		t.Fatalf("next step: %v", err)
	}
}

func TestVerifyConcurrentReplayAcceptsOnce(t *testing.T) {
	testenv.MemoryAndRedis(t, testVerifyConcurrentReplayAcceptsOnce)
}

func testVerifyConcurrentReplayAcceptsOnce(t *testing.T) {
	m, c, e := setup(t)
	good := code(t, e.Secret, c.Now())
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	for range 20 {
		wg.Go(func() {
			if m.Verify(context.Background(), "alice", e.Secret, good) == nil {
				mu.Lock()
				accepted++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if accepted != 1 {
		t.Fatalf("accepted %d times", accepted)
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Issuer: "x", Digits: 7},
		{Issuer: "x", Period: 1500 * time.Millisecond},
		{Issuer: "x", Skew: 10},
	} {
		if _, err := New(cfg, nil); err == nil {
			t.Errorf("%+v: want an error", cfg)
		}
	}
}

func TestRequirement(t *testing.T) {
	r := Requirement{Roles: []string{"admin"}}
	if !r.Applies([]string{"engineer", "admin"}) || r.Applies([]string{"engineer"}) || r.Applies(nil) {
		t.Error("role requirement")
	}
	if !(Requirement{All: true}).Applies(nil) {
		t.Error("all")
	}
}
