package main

// End-to-end: logging in with a real OpenLDAP directory (and TOTP) at
// /auth/login through Envoy, then using the session on protected routes.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/kailash-gw/kailash/internal/testenv"
)

func ldapTenantYAML(t testing.TB, sl *testenv.Slapd) string {
	pwFile := filepath.Join(t.TempDir(), "ldap-bind-password")
	if err := os.WriteFile(pwFile, []byte(testenv.SlapdServicePW+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return tenantYAML(t, "acme") + fmt.Sprintf(`    ldap:
      url: %s
      start_tls: true
      ca_file: %s
      bind_dn: %s
      bind_password_file: %s
      user_base_dn: %s
      user_filter: "(uid=%%s)"
      group_roles:
        %q: admin
        %q: data_scientist
        %q: business_user
    mfa:
      roles: [admin]
`, sl.URL, sl.CAFile, testenv.SlapdService, pwFile, testenv.SlapdPeople,
		testenv.GroupDN("admins"), testenv.GroupDN("engineering"), testenv.GroupDN("sales"))
}

type authReply struct {
	reply
	cookies []*http.Cookie
	tokens  struct {
		Access  string `json:"access_token"`
		Refresh string `json:"refresh_token"`
		Error   string `json:"error"`
	}
}

func (s *stack) auth(path string, body any, header map[string]string) authReply {
	s.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", "http://"+s.ports.envoy+path, strings.NewReader(string(b)))
	req.Host = "acme.localhost"
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := authReply{reply: reply{resp.StatusCode, resp.Header, string(raw)}, cookies: resp.Cookies()}
	_ = json.Unmarshal(raw, &r.tokens)
	return r
}

func cookieValue(cs []*http.Cookie, name string) string {
	for _, c := range cs {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

func TestLoginEndToEnd(t *testing.T) {
	sl := testenv.StartSlapd(t)
	// Every test request comes from 127.0.0.1: count failures per user here.
	s := startStackConfig(t, func(p ports) string {
		return "lockout: {max_address_failures: 1000}\n" + configYAML(t, p) + ldapTenantYAML(t, sl)
	})

	t.Run("LDAP login, then cookie and bearer on a protected route", func(t *testing.T) {
		r := s.auth("/auth/login", map[string]string{"username": "bob", "password": "bob-pw"}, nil)
		if r.code != 200 || r.tokens.Access == "" || r.tokens.Refresh == "" {
			t.Fatalf("login: %d %s", r.code, r.body)
		}
		cookie := cookieValue(r.cookies, "kailash_session")
		if cookie == "" || !strings.Contains(r.header.Get("Set-Cookie"), "HttpOnly") {
			t.Fatalf("no HttpOnly session cookie: %v", r.header.Values("Set-Cookie"))
		}
		for name, h := range map[string]map[string]string{"cookie": {"Cookie": "kailash_session=" + cookie, "Sec-Fetch-Site": "same-origin"}, "bearer": nil} {
			tok := ""
			if h == nil {
				tok = r.tokens.Access
			}
			got := s.mustDo("acme.localhost", tok, h)
			if got.code != 200 {
				t.Fatalf("%s: %d %s", name, got.code, got.body)
			}
			if m := got.json(t); m["user"] != "bob" || m["tenant"] != "acme" {
				t.Fatalf("%s: runner saw %s", name, got.body)
			}
		}

		// refresh rotates; the old refresh token is then refused and its reuse revokes the session
		r2 := s.auth("/auth/refresh", map[string]string{"refresh_token": r.tokens.Refresh}, nil)
		if r2.code != 200 || r2.tokens.Access == "" || r2.tokens.Refresh == r.tokens.Refresh {
			t.Fatalf("refresh: %d %s", r2.code, r2.body)
		}
		if got := s.mustDo("acme.localhost", r2.tokens.Access, nil); got.code != 200 {
			t.Fatalf("refreshed token: %d %s", got.code, got.body)
		}
		if re := s.auth("/auth/refresh", map[string]string{"refresh_token": r.tokens.Refresh}, nil); re.code != 401 {
			t.Fatalf("reused refresh token: %d %s", re.code, re.body)
		}
		if got := s.mustDo("acme.localhost", r2.tokens.Access, nil); got.code != 401 {
			t.Fatalf("session still valid after refresh-token reuse: %d", got.code)
		}

		// a new session, logged out: its token is refused afterwards
		r3 := s.auth("/auth/login", map[string]string{"username": "bob", "password": "bob-pw"}, nil)
		if r3.code != 200 {
			t.Fatalf("login: %d %s", r3.code, r3.body)
		}
		if lo := s.auth("/auth/logout", nil, map[string]string{"Authorization": "Bearer " + r3.tokens.Access}); lo.code != 204 {
			t.Fatalf("logout: %d %s", lo.code, lo.body)
		}
		if got := s.mustDo("acme.localhost", r3.tokens.Access, nil); got.code != 401 {
			t.Fatalf("token after logout: %d %s", got.code, got.body)
		}
	})

	t.Run("wrong password and unknown user get the same answer", func(t *testing.T) {
		a := s.auth("/auth/login", map[string]string{"username": "bob", "password": "nope"}, nil)
		b := s.auth("/auth/login", map[string]string{"username": "nobody", "password": "nope"}, nil)
		if a.code != 401 || b.code != 401 || a.body != b.body {
			t.Fatalf("wrong password: %d %s; unknown user: %d %s", a.code, a.body, b.code, b.body)
		}
	})

	t.Run("lockout after 5 failures, even with the right password", func(t *testing.T) {
		for i := 0; i < 5; i++ {
			if r := s.auth("/auth/login", map[string]string{"username": "carol", "password": "wrong"}, nil); r.code != 401 {
				t.Fatalf("attempt %d: %d %s", i+1, r.code, r.body)
			}
		}
		r := s.auth("/auth/login", map[string]string{"username": "carol", "password": "carol-pw"}, nil)
		if r.code != http.StatusTooManyRequests || r.tokens.Error != "locked" {
			t.Fatalf("6th attempt: %d %s", r.code, r.body)
		}
	})

	t.Run("MFA for admins: enrol, then log in with a TOTP code", func(t *testing.T) {
		creds := map[string]string{"username": "alice", "password": "alice-pw"}
		if r := s.auth("/auth/login", creds, nil); r.code != 403 || r.tokens.Error != "mfa_enrollment_required" {
			t.Fatalf("admin without TOTP: %d %s", r.code, r.body)
		}
		e := s.auth("/auth/totp/enroll", creds, nil)
		var enr struct {
			URI    string `json:"otpauth_uri"`
			Secret string `json:"secret"`
		}
		if err := json.Unmarshal([]byte(e.body), &enr); err != nil || e.code != 200 || !strings.HasPrefix(enr.URI, "otpauth://totp/") {
			t.Fatalf("enrol: %d %s", e.code, e.body)
		}
		if r := s.auth("/auth/login", creds, nil); r.code != 401 || r.tokens.Error != "mfa_required" {
			t.Fatalf("no code: %d %s", r.code, r.body)
		}
		code, err := totp.GenerateCode(enr.Secret, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		r := s.auth("/auth/login", map[string]string{"username": "alice", "password": "alice-pw", "totp": code}, nil)
		if r.code != 200 {
			t.Fatalf("login with TOTP: %d %s", r.code, r.body)
		}
		got := s.mustDo("acme.localhost", r.tokens.Access, nil)
		if got.code != 200 || got.json(t)["user"] != "alice" {
			t.Fatalf("alice: %d %s", got.code, got.body)
		}
		if again := s.auth("/auth/login", map[string]string{"username": "alice", "password": "alice-pw", "totp": code}, nil); again.code != 401 {
			t.Fatalf("a reused TOTP code was accepted: %d", again.code)
		}
	})

	t.Run("JWKS is served through Envoy", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "http://"+s.ports.envoy+"/auth/.well-known/jwks.json", nil)
		req.Host = "acme.localhost"
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var set struct{ Keys []map[string]any }
		err = json.NewDecoder(resp.Body).Decode(&set)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || len(set.Keys) == 0 || set.Keys[0]["d"] != nil {
			t.Fatalf("jwks: %d %v %v", resp.StatusCode, err, set)
		}
	})

	t.Run("directory down is 503, never 401", func(t *testing.T) {
		sl.Kill()
		r := s.auth("/auth/login", map[string]string{"username": "bob", "password": "bob-pw"}, nil)
		if r.code != 503 {
			t.Fatalf("LDAP down: %d %s", r.code, r.body)
		}
	})
}
