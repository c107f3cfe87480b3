package login

// The directory binds many spellings of a username as one account
// (OpenLDAP's uid ignores case and width: alice, ALICE, ａｌｉｃｅ, alİce).
// The lockout budget, the session subject and max_sessions are the
// account's, not the spelling's. Real slapd (and redis-server for the
// shared stores).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/redis/go-redis/v9"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/internal/wire"
)

// canonicalMaxFailures is the per-user (and per-address) lockout budget of
// these tests.
const canonicalMaxFailures = 3

type canonicalServer struct {
	srv   *Service
	mux   *http.ServeMux
	redis *testenv.Redis // nil: the in-memory stores
	addr  atomic.Int64   // the last client address handed out
}

// startCanonical is one authz server with acme's directory on a real
// slapd, lockout after canonicalMaxFailures, and at most maxSessions
// sessions per user (refuse beyond).
func startCanonical(t *testing.T, withRedis bool, maxSessions int) *canonicalServer {
	t.Helper()
	sl := testenv.StartSlapd(t)
	t.Setenv("KAILASH_TEST_CANONICAL_LDAP_PW", testenv.SlapdServicePW)
	cs := &canonicalServer{}
	cfg := testConfig(t)
	if withRedis {
		cs.redis = testenv.StartRedis(t)
		cfg.Sessions.Redis = &config.Redis{Addr: config.MustHostPort(cs.redis.Addr), Timeout: time.Second}
	}
	cfg.Lockout = config.Lockout{MaxFailures: canonicalMaxFailures}
	cfg.Sessions.MaxSessions = maxSessions
	cfg.Tenants[0].LDAP = &config.LDAP{URL: config.MustURL(sl.URL), BindDN: testenv.SlapdService, BindPasswordEnv: "KAILASH_TEST_CANONICAL_LDAP_PW",
		UserBaseDN: testenv.SlapdPeople, UserFilter: "(uid=%s)",
		GroupRoles: map[string]string{testenv.GroupDN("admins"): "admin", testenv.GroupDN("engineering"): "data_scientist"}}
	srv, err := New(cfg, Options{Now: fixedClock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cs.srv, cs.mux = srv, http.NewServeMux()
	srv.Routes(cs.mux)
	return cs
}

type loginResult struct {
	code  int
	raw   []byte // the body as sent
	body  map[string]any
	retry string // Retry-After
}

// login posts username and password from a client address of its own,
// as a distributed attacker would: the per-address limit never applies.
func (cs *canonicalServer) login(t *testing.T, username, password string) loginResult {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"username": username, "password": password})
	req := httptest.NewRequest("POST", "/auth/login", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(wire.HeaderTenant, "acme")
	n := cs.addr.Add(1)
	req.Header.Set("X-Forwarded-For", fmt.Sprintf("198.51.%d.%d", n/250, n%250+1))
	rec := httptest.NewRecorder()
	cs.mux.ServeHTTP(rec, req)
	resp := rec.Result()
	raw, _ := io.ReadAll(resp.Body)
	out := loginResult{code: resp.StatusCode, raw: raw, retry: resp.Header.Get("Retry-After")}
	_ = json.Unmarshal(raw, &out.body)
	return out
}

func TestLockoutCountsTheAccountAcrossSpellings(t *testing.T) {
	for _, store := range []string{"memory", "redis"} {
		t.Run(store, func(t *testing.T) {
			cs := startCanonical(t, store == "redis", 0)

			// Failures in three spellings lock alice's one account.
			for i, spelling := range []string{"alice", "ALICE", "ａｌｉｃｅ"} {
				if r := cs.login(t, spelling, "wrong-"+spelling); r.code != http.StatusUnauthorized || r.body["error"] != "invalid_credentials" {
					t.Fatalf("failure %d as %q: %d %s", i+1, spelling, r.code, r.raw)
				}
			}
			// Locked: the right password is refused in every spelling, and
			// answered exactly like a wrong one (no password oracle).
			var lockedBody []byte
			for _, spelling := range []string{"alice", "ALICE", "ａｌｉｃｅ", "alİce", "Alice"} {
				for _, pw := range []string{"alice-pw", "wrong"} {
					r := cs.login(t, spelling, pw)
					if r.code != http.StatusTooManyRequests || r.body["error"] != "locked" || r.retry == "" {
						t.Fatalf("locked alice as %q with %q: %d %s", spelling, pw, r.code, r.raw)
					}
					if lockedBody == nil {
						lockedBody = r.raw
					}
					if !bytes.Equal(r.raw, lockedBody) {
						t.Fatalf("locked answers differ: %s / %s", r.raw, lockedBody)
					}
				}
			}
			// Another account is not locked.
			if r := cs.login(t, "BOB", "bob-pw"); r.code != 200 {
				t.Fatalf("bob: %d %s", r.code, r.raw)
			}

			if cs.redis != nil {
				rc := redisOf(t, cs.redis)
				keys := rc.Keys(context.Background(), "*").Val()
				want := "kailash:lockout:l:d:acme/uid=alice,ou=people,dc=example,dc=com"
				found := false
				for _, k := range keys {
					if !strings.HasPrefix(k, "kailash:") {
						t.Errorf("key %q lacks the prefix", k)
					}
					found = found || k == want
				}
				if !found {
					t.Errorf("no lock %q in %q", want, keys)
				}
			}
		})
	}
}

// A good login in any spelling resets the account's failures.
func TestLoginSuccessResetsTheAccount(t *testing.T) {
	cs := startCanonical(t, false, 0)
	for _, spelling := range []string{"ａｌｉｃｅ", "alice"} {
		if r := cs.login(t, spelling, "wrong"); r.code != http.StatusUnauthorized {
			t.Fatalf("failure as %q: %d %s", spelling, r.code, r.raw)
		}
	}
	if r := cs.login(t, "ALICE", "alice-pw"); r.code != 200 {
		t.Fatalf("good login as ALICE: %d %s", r.code, r.raw)
	}
	for _, spelling := range []string{"Alice", "alİce"} {
		if r := cs.login(t, spelling, "wrong"); r.code != http.StatusUnauthorized {
			t.Fatalf("failure as %q after the reset: %d %s", spelling, r.code, r.raw)
		}
	}
	if r := cs.login(t, "alice", "alice-pw"); r.code != 200 {
		t.Fatalf("alice, two failures after the reset: %d %s", r.code, r.raw)
	}
}

// An unknown user is counted too, its spellings together, and every
// answer is the one a real user gets: 401 byte-identical to a wrong
// password, then the same lock.
func TestUnknownUserCountedAcrossSpellings(t *testing.T) {
	cs := startCanonical(t, false, 0)
	wrong := cs.login(t, "carol", "wrong")
	if wrong.code != http.StatusUnauthorized {
		t.Fatalf("carol, wrong password: %d %s", wrong.code, wrong.raw)
	}
	for i, spelling := range []string{"mallory", "MALLORY", "Ｍａｌｌｏｒｙ"} {
		r := cs.login(t, spelling, "guess")
		if r.code != wrong.code || !bytes.Equal(r.raw, wrong.raw) {
			t.Fatalf("unknown user, attempt %d as %q: %d %s; a wrong password gets %d %s", i+1, spelling, r.code, r.raw, wrong.code, wrong.raw)
		}
	}
	mallory := cs.login(t, "Mallory", "guess")
	if mallory.code != http.StatusTooManyRequests || mallory.body["error"] != "locked" {
		t.Fatalf("unknown user after %d failures: %d %s", canonicalMaxFailures, mallory.code, mallory.raw)
	}
	// carol, locked the same way, gets the same answer.
	for range canonicalMaxFailures - 1 {
		cs.login(t, "CAROL", "wrong")
	}
	carol := cs.login(t, "carol", "carol-pw")
	if carol.code != mallory.code || !bytes.Equal(carol.raw, mallory.raw) {
		t.Fatalf("locked carol %d %s, locked mallory %d %s", carol.code, carol.raw, mallory.code, mallory.raw)
	}
}

// The session's subject is the directory's name for the account, whatever
// was typed: the session, x-kailash-user and the identity token's sub.
func TestLoginSubjectIsTheDirectoryName(t *testing.T) {
	cs := startCanonical(t, false, 0)
	ctx := context.Background()
	for _, spelling := range []string{"ALICE", "ａｌｉｃｅ", "alİce"} {
		r := cs.login(t, spelling, "alice-pw")
		token, _ := r.body["access_token"].(string)
		if r.code != 200 || token == "" {
			t.Fatalf("login as %q: %d %s", spelling, r.code, r.raw)
		}
		id, ours, err := cs.srv.VerifySession(ctx, token, "acme")
		if !ours || err != nil || id.Subject != "alice" {
			t.Fatalf("session of %q: %+v %v %v", spelling, id, ours, err)
		}
		// What the Check path sends upstream for this session (extauthz's
		// TestSessionTokensOnTheCheckPath runs the whole Check).
		idToken, err := cs.srv.IdentityToken("acme", id)
		if err != nil {
			t.Fatal(err)
		}
		resp, _, err := envoyauth.MapDecision(true, envoyauth.Decision{ID: "d1", Tenant: "acme", Identity: id, IdentityToken: idToken})
		if err != nil {
			t.Fatal(err)
		}
		ok := resp.GetOkResponse()
		if ok == nil {
			t.Fatalf("check as %q: %v", spelling, resp)
		}
		h := headerMap(t, ok.GetHeaders())
		if h[wire.HeaderUser] != "alice" {
			t.Fatalf("%s of %q: %q", wire.HeaderUser, spelling, h[wire.HeaderUser])
		}
		set, _ := cs.srv.ring.Keys(ctx)
		it, err := jwt.ParseString(h[wire.HeaderIdentity], jwt.WithKeySet(set), jwt.WithClock(jwt.ClockFunc(fixedClock)))
		if err != nil || it.Subject() != "alice" {
			t.Fatalf("identity token of %q: sub %v, %v", spelling, it, err)
		}
	}
}

// max_sessions counts the account's sessions, whatever spelling opened them.
func TestMaxSessionsCountsTheAccount(t *testing.T) {
	cs := startCanonical(t, false, 2)
	for _, spelling := range []string{"alice", "ALICE"} {
		if r := cs.login(t, spelling, "alice-pw"); r.code != 200 {
			t.Fatalf("session as %q: %d %s", spelling, r.code, r.raw)
		}
	}
	for _, spelling := range []string{"ａｌｉｃｅ", "alİce", "alice"} {
		if r := cs.login(t, spelling, "alice-pw"); r.code != http.StatusConflict || r.body["error"] != "too_many_sessions" {
			t.Fatalf("third session as %q: %d %s", spelling, r.code, r.raw)
		}
	}
	if r := cs.login(t, "bob", "bob-pw"); r.code != 200 {
		t.Fatalf("bob: %d %s", r.code, r.raw)
	}
}

func redisOf(t *testing.T, rd *testenv.Redis) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: rd.Addr, DisableIdentity: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}
