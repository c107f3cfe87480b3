package lockout

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

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

func newGuard(t testing.TB, cfg Config) (*Guard, *clock) {
	c := &clock{t: time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)}
	cfg.Now = c.Now
	return New(newStore(t, c.Now), cfg), c
}

// step is one action of a scenario: a failure, a success, a check, or time
// passing; want is the lock scope expected ("" = not locked).
type step struct {
	op, user, addr string
	wait           time.Duration
	want           string
}

func TestGuard(t *testing.T) { testenv.MemoryAndRedis(t, testGuard) }

func testGuard(t *testing.T) {
	fail := func(u, a string) step { return step{op: "fail", user: u, addr: a} }
	failLocks := func(u, a, scope string) step { return step{op: "fail", user: u, addr: a, want: scope} }
	check := func(u, a, want string) step { return step{op: "check", user: u, addr: a, want: want} }
	wait := func(d time.Duration) step { return step{op: "wait", wait: d} }
	ok := func(u string) step { return step{op: "success", user: u} }

	tests := []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{"fifth failure locks the user for 15m", Config{}, []step{
			fail("alice", "10.0.0.1"), fail("alice", "10.0.0.2"), fail("alice", "10.0.0.3"), fail("alice", "10.0.0.4"),
			check("alice", "10.0.0.9", ""),
			failLocks("alice", "10.0.0.5", "user"),
			check("alice", "10.0.0.9", "user"),
			check("bob", "10.0.0.9", ""),
			wait(15*time.Minute - time.Second), check("alice", "10.0.0.9", "user"),
			wait(time.Second), check("alice", "10.0.0.9", ""),
		}},
		{"unknown users lock exactly like real ones", Config{}, []step{
			fail("nobody", "10.0.0.1"), fail("nobody", "10.0.0.2"), fail("nobody", "10.0.0.3"), fail("nobody", "10.0.0.4"),
			failLocks("nobody", "10.0.0.5", "user"), check("nobody", "10.0.0.6", "user"),
		}},
		{"username case and spaces share a counter", Config{}, []step{
			fail("Alice", "10.0.0.1"), fail("ALICE", "10.0.0.2"), fail(" alice", "10.0.0.3"), fail("alice ", "10.0.0.4"),
			failLocks("alice", "10.0.0.5", "user"),
		}},
		{"username width and compatibility forms share a counter", Config{}, []step{
			fail("ａｌｉｃｅ", "10.0.0.1"), fail("ＡＬＩＣＥ", "10.0.0.2"), fail("ᴬlice", "10.0.0.3"), fail("Ａlice", "10.0.0.4"),
			check("alice", "", ""), failLocks("ALICE", "10.0.0.5", "user"), check("ａｌｉｃｅ", "", "user"),
		}},
		{"the address alone is checked without a user", Config{MaxAddressFailures: 2}, []step{
			fail("u1", "10.0.0.1"), check("", "10.0.0.1", ""), failLocks("u2", "10.0.0.1", "address"),
			check("", "10.0.0.1", "address"), check("u3", "", ""),
		}},
		{"one address spraying many users is locked", Config{}, []step{
			fail("u1", "192.0.2.7:5000"), fail("u2", "192.0.2.7:5001"), fail("u3", "192.0.2.7"), fail("u4", "192.0.2.7"),
			failLocks("u5", "192.0.2.7", "address"),
			check("u6", "192.0.2.7:6000", "address"),
			check("u6", "192.0.2.8", ""),
		}},
		{"IPv6 counts per /64", Config{}, []step{
			fail("u1", "[2001:db8::1]:443"), fail("u2", "2001:db8::2"), fail("u3", "2001:db8::3"), fail("u4", "2001:db8::ffff"),
			failLocks("u5", "2001:db8::5", "address"),
			check("u6", "2001:db8::abcd", "address"), check("u6", "2001:db8:0:1::1", ""),
		}},
		{"IPv4-mapped IPv6 is the IPv4 address", Config{MaxAddressFailures: 2}, []step{
			fail("u1", "::ffff:192.0.2.1"), failLocks("u2", "192.0.2.1", "address"),
		}},
		{"failures outside the window are forgotten", Config{Window: 10 * time.Minute}, []step{
			fail("alice", ""), fail("alice", ""), fail("alice", ""), fail("alice", ""),
			wait(10 * time.Minute), fail("alice", ""), fail("alice", ""), check("alice", "", ""),
		}},
		{"success resets the user but not the address", Config{}, []step{
			fail("alice", "10.0.0.1"), fail("alice", "10.0.0.1"), fail("alice", "10.0.0.1"), fail("alice", "10.0.0.1"),
			ok("alice"),
			fail("alice", "10.0.0.2"), check("alice", "", ""),
			failLocks("bob", "10.0.0.1", "address"),
		}},
		{"success does not lift a lock", Config{MaxFailures: 1}, []step{
			failLocks("alice", "", "user"), ok("alice"), check("alice", "", "user"),
		}},
		{"configured N and D", Config{MaxFailures: 3, LockFor: time.Minute}, []step{
			fail("alice", ""), fail("alice", ""), failLocks("alice", "", "user"),
			wait(time.Minute), check("alice", "", ""),
			// After the lock the count starts again from zero.
			fail("alice", ""), fail("alice", ""), check("alice", "", ""), failLocks("alice", "", "user"),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, clk := newGuard(t, tt.cfg)
			ctx := context.Background()
			for i, s := range tt.steps {
				var err error
				user := ""
				if s.user != "" {
					user = UserKey("acme", s.user)
				}
				switch s.op {
				case "wait":
					clk.Add(s.wait)
					continue
				case "success":
					if err := g.Success(ctx, user); err != nil {
						t.Fatalf("step %d: %v", i, err)
					}
					continue
				case "fail":
					err = g.Failure(ctx, user, s.addr)
				case "check":
					err = g.Check(ctx, user, s.addr)
				}
				var le *LockedError
				switch {
				case s.want == "" && err != nil:
					t.Fatalf("step %d (%s %s@%s): unexpected %v", i, s.op, s.user, s.addr, err)
				case s.want != "" && !errors.As(err, &le):
					t.Fatalf("step %d (%s %s@%s): got %v, want locked (%s)", i, s.op, s.user, s.addr, err, s.want)
				case s.want != "" && (le.Scope != s.want || !errors.Is(err, ErrLocked)):
					t.Fatalf("step %d: locked scope %q, want %q", i, le.Scope, s.want)
				}
			}
		})
	}
}

func TestLockedErrorRevealsNothing(t *testing.T) {
	testenv.MemoryAndRedis(t, testLockedErrorRevealsNothing)
}

func testLockedErrorRevealsNothing(t *testing.T) {
	g, _ := newGuard(t, Config{MaxFailures: 1})
	ctx := context.Background()
	e1 := g.Failure(ctx, AccountKey("acme", "uid=alice,ou=people,dc=example,dc=com"), "")
	e2 := g.Failure(ctx, UserKey("acme", "no-such-user"), "")
	if e1 == nil || e2 == nil || e1.Error() != e2.Error() {
		t.Fatalf("messages differ: %v / %v", e1, e2)
	}
}

func TestConcurrentFailuresCountExactly(t *testing.T) {
	testenv.MemoryAndRedis(t, testConcurrentFailuresCountExactly)
}

func testConcurrentFailuresCountExactly(t *testing.T) {
	g, _ := newGuard(t, Config{MaxFailures: 100})
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 99 {
		wg.Go(func() { _ = g.Failure(ctx, "alice", "") })
	}
	wg.Wait()
	if err := g.Check(ctx, "alice", ""); err != nil {
		t.Fatalf("locked after 99 of 100: %v", err)
	}
	if err := g.Failure(ctx, "alice", ""); !errors.Is(err, ErrLocked) {
		t.Fatalf("100th failure: %v", err)
	}
}

type brokenStore struct{ *MemoryStore }

func (*brokenStore) LockedUntil(context.Context, string) (time.Time, error) {
	return time.Time{}, errors.New("redis down")
}

func TestStoreErrorFailsClosed(t *testing.T) {
	g := New(&brokenStore{NewMemoryStore(nil)}, Config{})
	err := g.Check(context.Background(), "alice", "")
	if err == nil || errors.Is(err, ErrLocked) {
		t.Fatalf("got %v, want a store error", err)
	}
}

func TestUserKeys(t *testing.T) {
	alice := AccountKey("acme", "uid=alice,ou=people,dc=example,dc=com")
	if got := AccountKey("acme", "UID=Alice,OU=People,DC=example,DC=com"); got != alice {
		t.Errorf("DN case makes another key: %q vs %q", got, alice)
	}
	if AccountKey("globex", "uid=alice,ou=people,dc=example,dc=com") == alice {
		t.Error("two tenants share an account key")
	}
	// A typed name that spells the DN is not the account.
	if UserKey("acme", "uid=alice,ou=people,dc=example,dc=com") == alice {
		t.Error("a typed name counts against an account")
	}
	for _, spelling := range []string{"alice", "ALICE", "Alice", " alice ", "ａｌｉｃｅ", "ＡＬＩＣＥ", "ᴬlice"} {
		if got := UserKey("acme", spelling); got != "u:acme/alice" {
			t.Errorf("UserKey(%q) = %q, want u:acme/alice", spelling, got)
		}
	}
	if UserKey("acme", "alice") == UserKey("globex", "alice") || UserKey("acme", "alice") == UserKey("acme", "alicia") {
		t.Error("distinct names or tenants share a key")
	}
	// Full case folding: ß is ss, Σ/σ/ς are one letter.
	for a, b := range map[string]string{"STRASSE": "straße", "ΟΔΥΣΣΕΥΣ": "οδυσσευς", "ｍａｌｌｏｒｙ": "MALLORY"} {
		if Fold(a) != Fold(b) {
			t.Errorf("Fold(%q) = %q, Fold(%q) = %q", a, Fold(a), b, Fold(b))
		}
	}
}

func TestAddressKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":             "a:192.0.2.1",
		"192.0.2.1:8080":        "a:192.0.2.1",
		"[2001:db8::1]:443":     "a:2001:db8::/64",
		"2001:db8:1:2:3:4:5:6":  "a:2001:db8:1:2::/64",
		"::ffff:198.51.100.200": "a:198.51.100.200",
		"not-an-ip":             "a:not-an-ip",
	} {
		if got := AddressKey(in); got != want {
			t.Errorf("AddressKey(%q) = %q, want %q", in, got, want)
		}
	}
}
