package main

// End-to-end hardening of the login service through Envoy: refresh and
// logout are bound to the host's tenant, and cookie-authenticated unsafe
// requests must come from the tenant's own origins (CSRF).

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/kailash-gw/kailash/internal/testenv"
)

// send is one request through Envoy to host.
func (s *stack) send(method, host, path, body string, header map[string]string) authReply {
	s.t.Helper()
	req, err := http.NewRequest(method, "http://"+s.ports.envoy+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Host = host
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
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

func startLoginHardeningStack(t *testing.T) *stack {
	sl := testenv.StartSlapd(t)
	return startStackConfig(t, func(p ports) string {
		return "lockout: {max_address_failures: 1000}\nsessions: {insecure_cookies: true}\n" + configYAML(t, p) +
			ldapTenantYAML(t, sl) + "    login:\n      allowed_origins: [\"https://portal.example.com\"]\n" +
			tenantYAML(t, "globex")
	})
}

func TestLoginRefreshAndLogoutBoundToTenantEndToEnd(t *testing.T) {
	s := startLoginHardeningStack(t)
	login := s.auth("/auth/login", map[string]string{"username": "bob", "password": "bob-pw"}, nil)
	if login.code != 200 || login.tokens.Refresh == "" {
		t.Fatalf("login: %d %s", login.code, login.body)
	}
	refreshBody := `{"refresh_token":"` + login.tokens.Refresh + `"}`

	// acme's refresh token on globex's domain: refused, not rotated.
	r := s.send("POST", "globex.localhost", "/auth/refresh", refreshBody, nil)
	if r.code != 401 || r.tokens.Error != "wrong_tenant" || r.tokens.Access != "" {
		t.Fatalf("acme's refresh token on globex: %d %s", r.code, r.body)
	}
	// the same by cookie (from globex's own page): refused too
	r = s.send("POST", "globex.localhost", "/auth/refresh", "", map[string]string{
		"Cookie": "kailash_refresh=" + login.tokens.Refresh, "Origin": "http://globex.localhost"})
	if r.code != 401 || r.tokens.Error != "wrong_tenant" {
		t.Fatalf("acme's refresh cookie on globex: %d %s", r.code, r.body)
	}
	// acme's session on globex's logout: refused, the session lives on.
	lo := s.send("POST", "globex.localhost", "/auth/logout", "", map[string]string{"Authorization": "Bearer " + login.tokens.Access})
	if lo.code != 401 || lo.tokens.Error != "wrong_tenant" {
		t.Fatalf("acme's session logged out on globex: %d %s", lo.code, lo.body)
	}
	if got := s.mustDo("acme.localhost", login.tokens.Access, nil); got.code != 200 {
		t.Fatalf("acme's session after globex's logout: %d %s", got.code, got.body)
	}
	// The refresh token was neither spent nor counted as reused: on acme
	// it rotates once, and the session stays valid.
	r = s.send("POST", "acme.localhost", "/auth/refresh", refreshBody, nil)
	if r.code != 200 || r.tokens.Access == "" {
		t.Fatalf("acme's refresh on acme after globex refused it: %d %s", r.code, r.body)
	}
	if got := s.mustDo("acme.localhost", r.tokens.Access, nil); got.code != 200 {
		t.Fatalf("refreshed session: %d %s", got.code, got.body)
	}
	// On its own tenant, logout works.
	if lo := s.send("POST", "acme.localhost", "/auth/logout", "", map[string]string{"Authorization": "Bearer " + r.tokens.Access}); lo.code != 204 {
		t.Fatalf("logout on acme: %d %s", lo.code, lo.body)
	}
	if got := s.mustDo("acme.localhost", r.tokens.Access, nil); got.code != 401 {
		t.Fatalf("session after logout: %d %s", got.code, got.body)
	}
}

func TestCookieCSRFEndToEnd(t *testing.T) {
	s := startLoginHardeningStack(t)
	login := s.auth("/auth/login", map[string]string{"username": "bob", "password": "bob-pw"}, nil)
	cookie := cookieValue(login.cookies, "kailash_session")
	if login.code != 200 || cookie == "" {
		t.Fatalf("login: %d %s", login.code, login.body)
	}
	const run = "/v1/workflows/hello/executions"
	c := "kailash_session=" + cookie
	for _, tc := range []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"cookie, no Origin or Sec-Fetch-Site", map[string]string{"Cookie": c}, 403},
		{"cookie, a sibling tenant's origin (same site)", map[string]string{"Cookie": c, "Origin": "http://globex.localhost", "Sec-Fetch-Site": "same-site"}, 403},
		{"cookie, a foreign origin", map[string]string{"Cookie": c, "Origin": "https://evil.example"}, 403},
		{"cookie, opaque origin", map[string]string{"Cookie": c, "Origin": "null"}, 403},
		{"cookie, cross-site fetch without Origin", map[string]string{"Cookie": c, "Sec-Fetch-Site": "cross-site"}, 403},
		{"cookie, the tenant's own origin", map[string]string{"Cookie": c, "Origin": "http://acme.localhost:8080"}, 200},
		{"cookie, an allowed origin", map[string]string{"Cookie": c, "Origin": "https://portal.example.com", "Sec-Fetch-Site": "cross-site"}, 200},
		{"cookie, same-origin fetch", map[string]string{"Cookie": c, "Sec-Fetch-Site": "same-origin"}, 200},
		{"bearer with a foreign origin (not cookie-authenticated)", map[string]string{"Authorization": "Bearer " + login.tokens.Access, "Cookie": c, "Origin": "https://evil.example"}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.upstreamCount()
			r := s.send("POST", "acme.localhost", run, `{"order": 1}`, tc.header)
			if r.code != tc.want {
				t.Fatalf("got %d, want %d: %s", r.code, tc.want, r.body)
			}
			if tc.want == 403 {
				if r.tokens.Error != "csrf" {
					t.Fatalf("403 without error csrf: %s", r.body)
				}
				if s.upstreamCount() != before {
					t.Fatal("a refused request reached the runner")
				}
			}
		})
	}
	// A safe method with the cookie is not a CSRF concern.
	if r := s.send("GET", "acme.localhost", "/v1/workflows", "", map[string]string{"Cookie": c}); strings.Contains(r.body, "csrf") {
		t.Fatalf("GET refused as csrf: %d %s", r.code, r.body)
	}

	// The login service's own cookie endpoints.
	lo := s.send("POST", "acme.localhost", "/auth/logout", "", map[string]string{"Cookie": c, "Origin": "https://evil.example"})
	if lo.code != 403 || lo.tokens.Error != "csrf" {
		t.Fatalf("cross-site logout by cookie: %d %s", lo.code, lo.body)
	}
	rf := s.send("POST", "acme.localhost", "/auth/refresh", "", map[string]string{"Cookie": "kailash_refresh=" + login.tokens.Refresh, "Sec-Fetch-Site": "cross-site"})
	if rf.code != 403 || rf.tokens.Error != "csrf" {
		t.Fatalf("cross-site refresh by cookie: %d %s", rf.code, rf.body)
	}
	if got := s.mustDo("acme.localhost", login.tokens.Access, nil); got.code != 200 {
		t.Fatalf("session after refused cross-site logout: %d %s", got.code, got.body)
	}
	rf = s.send("POST", "acme.localhost", "/auth/refresh", "", map[string]string{"Cookie": "kailash_refresh=" + login.tokens.Refresh, "Origin": "http://acme.localhost"})
	if rf.code != 200 || rf.tokens.Access == "" {
		t.Fatalf("same-origin refresh by cookie: %d %s", rf.code, rf.body)
	}
	lo = s.send("POST", "acme.localhost", "/auth/logout", "", map[string]string{"Cookie": "kailash_session=" + rf.tokens.Access, "Sec-Fetch-Site": "same-origin"})
	if lo.code != 204 {
		t.Fatalf("same-origin logout by cookie: %d %s", lo.code, lo.body)
	}
}
