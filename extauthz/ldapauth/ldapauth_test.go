package ldapauth

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/testenv"
)

func config(s *testenv.Slapd) Config {
	return Config{
		URL:          s.URL,
		BindDN:       testenv.SlapdService,
		BindPassword: testenv.SlapdServicePW,
		UserBaseDN:   testenv.SlapdPeople,
		UserFilter:   "(&(objectClass=inetOrgPerson)(uid=%s))",
		GroupRoles: map[string]string{
			// Keys are DNs, compared as DNs: case and spacing do not matter.
			"CN=Admins, OU=Groups, DC=example, DC=com": "admin",
			testenv.GroupDN("engineering"):             "engineer",
			testenv.GroupDN("sales"):                   "sales",
		},
		DialTimeout:    2 * time.Second,
		RequestTimeout: 2 * time.Second,
	}
}

func newAuth(t *testing.T, cfg Config) *Authenticator {
	t.Helper()
	a, err := New(cfg, WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func TestAuthenticateGoodLogin(t *testing.T) {
	s := testenv.StartSlapd(t)
	a := newAuth(t, config(s))
	ctx := testenv.Context(t)

	id, err := a.Authenticate(ctx, "alice", "alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	want := Identity{
		Username: "alice", DN: "uid=alice,ou=people,dc=example,dc=com",
		Email: "alice@example.com", GivenName: "Alice", FamilyName: "Liddell",
		Department: "engineering", Title: "Staff Engineer", Clearance: "secret", Location: "Zurich",
		Roles: []string{"admin", "engineer"},
	}
	got := *id
	got.Groups = nil
	if !equalIdentity(got, want) {
		t.Errorf("identity:\n got %+v\nwant %+v", got, want)
	}
	if len(id.Groups) != 2 {
		t.Errorf("groups = %q, want engineering and admins", id.Groups)
	}
	if attrs := id.Attributes(); attrs["department"] != "engineering" || attrs["clearance"] != "secret" || attrs["location"] != "Zurich" {
		t.Errorf("attributes = %v", attrs)
	}

	bob, err := a.Authenticate(ctx, "bob", "bob-pw")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(bob.Roles, []string{"engineer"}) {
		t.Errorf("bob roles = %q, want [engineer]", bob.Roles)
	}
}

func equalIdentity(a, b Identity) bool {
	return a.Username == b.Username && a.DN == b.DN && a.Email == b.Email && a.GivenName == b.GivenName &&
		a.FamilyName == b.FamilyName && a.Department == b.Department && a.Title == b.Title &&
		a.Clearance == b.Clearance && a.Location == b.Location && slices.Equal(a.Roles, b.Roles)
}

func TestAuthenticateRejects(t *testing.T) {
	s := testenv.StartSlapd(t)
	a := newAuth(t, config(s))
	ctx := testenv.Context(t)

	_, wrong := a.Authenticate(ctx, "alice", "not-her-password")
	if !errors.Is(wrong, ErrInvalidCredentials) || Reason(wrong) != ReasonWrongPassword {
		t.Fatalf("wrong password: %v (%s)", wrong, Reason(wrong))
	}
	tests := []struct {
		name, user, password, reason string
	}{
		{"unknown user", "mallory", "alice-pw", ReasonUnknownUser},
		{"empty password", "alice", "", ReasonEmptyPassword},
		{"case differs only in password", "alice", "ALICE-PW", ReasonWrongPassword},
		// Injection attempts, with alice's real password: an unescaped
		// filter would match her (or everyone) and the bind would succeed.
		{"star", "*", "alice-pw", ReasonUnknownUser},
		{"prefix star", "a*", "alice-pw", ReasonUnknownUser},
		{"close and match all", ")(uid=*", "alice-pw", ReasonUnknownUser},
		{"or injection", "alice)(|(uid=*", "alice-pw", ReasonUnknownUser},
		{"objectClass", "*)(objectClass=*", "alice-pw", ReasonUnknownUser},
		{"backslash escape", `alice\2a`, "alice-pw", ReasonUnknownUser},
		{"NUL truncation", "alice\x00", "alice-pw", ReasonInvalidUsername},
		{"NUL in middle", "ali\x00ce", "alice-pw", ReasonInvalidUsername},
		{"newline", "alice\n", "alice-pw", ReasonInvalidUsername},
		{"trailing space", "alice ", "alice-pw", ReasonInvalidUsername},
		{"empty user", "", "alice-pw", ReasonInvalidUsername},
		{"too long", strings.Repeat("a", MaxUsernameLength+1), "alice-pw", ReasonInvalidUsername},
		{"invalid utf8", "alice\xff", "alice-pw", ReasonInvalidUsername},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := a.Authenticate(ctx, tt.user, tt.password)
			if id != nil || !errors.Is(err, ErrInvalidCredentials) {
				t.Fatalf("got %v, %v; want ErrInvalidCredentials", id, err)
			}
			if Reason(err) != tt.reason {
				t.Errorf("reason = %q, want %q", Reason(err), tt.reason)
			}
			// Indistinguishable from a wrong password to anyone who only
			// sees the error.
			if err.Error() != wrong.Error() {
				t.Errorf("message %q differs from wrong password's %q", err, wrong)
			}
		})
	}
}

func TestAuthenticateTLS(t *testing.T) {
	s := testenv.StartSlapd(t)
	ctx := testenv.Context(t)
	t.Run("ldaps", func(t *testing.T) {
		cfg := config(s)
		cfg.URL, cfg.CAFile = s.LDAPSURL, s.CAFile
		if _, err := newAuth(t, cfg).Authenticate(ctx, "carol", "carol-pw"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("starttls", func(t *testing.T) {
		cfg := config(s)
		cfg.StartTLS, cfg.CAFile = true, s.CAFile
		id, err := newAuth(t, cfg).Authenticate(ctx, "carol", "carol-pw")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(id.Roles, []string{"sales"}) {
			t.Errorf("roles = %q", id.Roles)
		}
	})
	t.Run("untrusted CA is unavailable, not a login", func(t *testing.T) {
		cfg := config(s)
		cfg.URL = s.LDAPSURL // system roots do not know the test CA
		_, err := newAuth(t, cfg).Authenticate(ctx, "carol", "carol-pw")
		if !errors.Is(err, ErrUnavailable) || Reason(err) != ReasonTLS {
			t.Fatalf("got %v (%s), want ErrUnavailable/tls", err, Reason(err))
		}
	})
	t.Run("starttls untrusted", func(t *testing.T) {
		cfg := config(s)
		cfg.StartTLS = true
		_, err := newAuth(t, cfg).Authenticate(ctx, "carol", "carol-pw")
		if !errors.Is(err, ErrUnavailable) || Reason(err) != ReasonTLS {
			t.Fatalf("got %v (%s), want ErrUnavailable/tls", err, Reason(err))
		}
	})
}

func TestAuthenticateDirectoryDown(t *testing.T) {
	s := testenv.StartSlapd(t)
	a := newAuth(t, config(s))
	ctx := testenv.Context(t)
	if _, err := a.Authenticate(ctx, "alice", "alice-pw"); err != nil {
		t.Fatal(err) // the pool now holds live connections
	}

	s.Kill()
	for _, pw := range []string{"alice-pw", "wrong"} {
		_, err := a.Authenticate(ctx, "alice", pw)
		if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrInvalidCredentials) {
			t.Fatalf("password %q with LDAP down: %v; want ErrUnavailable only", pw, err)
		}
		if Reason(err) != ReasonUnreachable {
			t.Errorf("reason = %q", Reason(err))
		}
	}

	// When the directory is back, logins work again without a restart.
	s.Restart()
	testenv.Eventually(t, 5*time.Second, func() error {
		_, err := a.Authenticate(ctx, "alice", "alice-pw")
		return err
	})
}

func TestAuthenticateServiceBindFails(t *testing.T) {
	s := testenv.StartSlapd(t)
	cfg := config(s)
	cfg.BindPassword = "wrong"
	_, err := newAuth(t, cfg).Authenticate(testenv.Context(t), "alice", "alice-pw")
	if !errors.Is(err, ErrUnavailable) || Reason(err) != ReasonServiceBind {
		t.Fatalf("got %v (%s), want ErrUnavailable/service_bind_failed", err, Reason(err))
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Error("error mentions the password")
	}
}

// A server that accepts connections and never answers: the request timeout
// (or the caller's deadline) ends the login with ErrUnavailable.
func TestAuthenticateTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	for _, tc := range []struct {
		name             string
		deadline, reqTTL time.Duration
	}{{"caller deadline", 200 * time.Millisecond, 5 * time.Second}, {"request timeout", 0, 300 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAuth(t, Config{
				URL: "ldap://" + ln.Addr().String(), BindDN: "cn=svc", BindPassword: "x",
				UserBaseDN: "dc=example,dc=com", UserFilter: "(uid=%s)", RequestTimeout: tc.reqTTL,
			})
			ctx := testenv.Context(t)
			if tc.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.deadline)
				defer cancel()
			}
			start := time.Now()
			_, err := a.Authenticate(ctx, "alice", "pw")
			if !errors.Is(err, ErrUnavailable) || Reason(err) != ReasonTimeout {
				t.Fatalf("got %v (%s), want ErrUnavailable/timeout", err, Reason(err))
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %s", d)
			}
		})
	}
}

func TestAuthenticateUnreachable(t *testing.T) {
	a := newAuth(t, Config{
		URL: "ldap://" + testenv.FreeAddr(t), BindDN: "cn=svc", BindPassword: "x",
		UserBaseDN: "dc=example,dc=com", UserFilter: "(uid=%s)",
	})
	_, err := a.Authenticate(testenv.Context(t), "alice", "pw")
	if !errors.Is(err, ErrUnavailable) || Reason(err) != ReasonUnreachable {
		t.Fatalf("got %v (%s)", err, Reason(err))
	}
}

func TestAuthenticateConcurrent(t *testing.T) {
	s := testenv.StartSlapd(t)
	cfg := config(s)
	cfg.PoolSize = 3
	a := newAuth(t, cfg)
	ctx := testenv.Context(t)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Go(func() {
			u := testenv.SlapdUsers[i%3]
			pw := u.Password
			if i%4 == 0 {
				pw = "wrong"
			}
			id, err := a.Authenticate(ctx, u.UID, pw)
			switch {
			case pw == "wrong" && !errors.Is(err, ErrInvalidCredentials):
				errs <- err
			case pw != "wrong" && (err != nil || id.Username != u.UID):
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestNewValidates(t *testing.T) {
	good := Config{URL: "ldap://127.0.0.1:389", BindDN: "cn=svc", BindPassword: "x",
		UserBaseDN: "dc=example,dc=com", UserFilter: "(uid=%s)"}
	tests := []struct {
		name   string
		mutate func(*Config)
	}{
		{"bad scheme", func(c *Config) { c.URL = "http://x" }},
		{"no host", func(c *Config) { c.URL = "ldap://" }},
		{"starttls on ldaps", func(c *Config) { c.URL, c.StartTLS = "ldaps://x", true }},
		{"filter without %s", func(c *Config) { c.UserFilter = "(uid=alice)" }},
		{"filter with two %s", func(c *Config) { c.UserFilter = "(|(uid=%s)(mail=%s))" }},
		{"filter with %d", func(c *Config) { c.UserFilter = "(uid=%s%d)" }},
		{"filter unbalanced", func(c *Config) { c.UserFilter = "(uid=%s" }},
		{"base not a DN", func(c *Config) { c.UserBaseDN = "nonsense" }},
		{"no service account", func(c *Config) { c.BindPassword = "" }},
		{"group not a DN", func(c *Config) { c.GroupRoles = map[string]string{"admins": "admin"} }},
		{"missing CA file", func(c *Config) { c.URL, c.CAFile = "ldaps://x", "/nonexistent/ca.pem" }},
	}
	if _, err := New(good); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			if _, err := New(c); err == nil {
				t.Fatal("want an error")
			}
		})
	}
}

func TestSecretNotPrinted(t *testing.T) {
	cfg := Config{BindPassword: "hunter2"}
	if s := strings.Join([]string{cfg.BindPassword.String()}, ""); strings.Contains(s, "hunter2") {
		t.Fatal("bind password printed")
	}
}

// BenchmarkAuthenticate is login throughput against a local slapd (bind
// dominated: one search and one bind per login over pooled connections).
func BenchmarkAuthenticate(b *testing.B) {
	s := testenv.StartSlapd(b)
	a, err := New(config(s))
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.Authenticate(ctx, "alice", "alice-pw"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
