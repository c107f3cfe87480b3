package main

// End-to-end: browser login with a real OpenID provider (the npm package
// oidc-provider, run by node as a plain process) through Envoy: the
// authorization-code flow with PKCE, state and nonce, our session on a
// protected route, refresh, max_sessions, RP-initiated logout, and the
// refusals a browser could be tricked into (tampered state, replayed
// code and state, another tenant's code).

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/internal/wire"
)

const (
	oidcAcmeClient   = "kailash-acme"
	oidcGlobexClient = "kailash-globex"
	oidcAlicePW      = "alice-pw"
)

// oidcE2E is the stack with tenants acme and globex logging in at one
// provider, each with a client of its own.
type oidcE2E struct {
	*stack
	op        *testenv.OIDCProvider
	envoyPort string
}

func oidcTenantYAML(t *testing.T, id, client, secretFile, envoyPort, issuer string) string {
	return tenantYAML(t, id) + fmt.Sprintf(`    login:
      oidc:
        issuer: %s
        client_id: %s
        client_secret_file: %s
        redirect_url: http://%s.localhost:%s/auth/oidc/callback
        post_logout_redirect_url: http://%s.localhost:%s/signed-out
        scopes: [openid, email, groups, roles]
        group_roles: {Engineering: data_scientist}
        attributes: {email: email}
`, issuer, client, secretFile, id, envoyPort, id, envoyPort)
}

func startOIDCE2E(t *testing.T) *oidcE2E {
	e := &oidcE2E{}
	e.stack = startStackConfig(t, func(p ports) string {
		_, e.envoyPort, _ = net.SplitHostPort(p.envoy)
		dir := t.TempDir()
		var clients []testenv.OIDCClient
		for _, c := range []struct{ tenant, id string }{{"acme", oidcAcmeClient}, {"globex", oidcGlobexClient}} {
			clients = append(clients, testenv.OIDCClient{ID: c.id, Secret: "secret-of-" + c.id,
				RedirectURIs:           []string{"http://" + c.tenant + ".localhost:" + e.envoyPort + "/auth/oidc/callback"},
				PostLogoutRedirectURIs: []string{"http://" + c.tenant + ".localhost:" + e.envoyPort + "/signed-out"}})
			if err := os.WriteFile(filepath.Join(dir, c.id), []byte("secret-of-"+c.id+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		e.op = testenv.StartOIDCProvider(t, clients, map[string]testenv.OIDCUser{
			"alice": {Password: oidcAlicePW, Claims: map[string]any{"email": "alice@example.com", "groups": []string{"Engineering"}, "roles": []string{"auditor"}}},
			"carol": {Password: "carol-pw", Claims: map[string]any{"email": "carol@example.com"}},
		})
		return "sessions: {insecure_cookies: true, max_sessions: 1}\n" + configYAML(t, p) +
			oidcTenantYAML(t, "acme", oidcAcmeClient, filepath.Join(dir, oidcAcmeClient), e.envoyPort, e.op.Issuer) +
			oidcTenantYAML(t, "globex", oidcGlobexClient, filepath.Join(dir, oidcGlobexClient), e.envoyPort, e.op.Issuer)
	})
	return e
}

// browser is a cookie jar and a client that reaches *.localhost through
// Envoy and follows no redirect by itself.
type browser struct {
	t      *testing.T
	e      *oidcE2E
	jar    *cookiejar.Jar
	client *http.Client
}

func (e *oidcE2E) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	envoyAddr := e.ports.envoy
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if host, _, _ := net.SplitHostPort(addr); strings.HasSuffix(host, ".localhost") {
			addr = envoyAddr
		}
		return dialer.DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &browser{t: t, e: e, jar: jar, client: &http.Client{Jar: jar, Transport: tr, Timeout: 15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type page struct {
	code     int
	location string
	body     string
	cookies  []*http.Cookie
}

func (b *browser) do(method, target string, form url.Values, header map[string]string) page {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	loc := ""
	if l, err := resp.Location(); err == nil {
		loc = l.String()
	}
	return page{code: resp.StatusCode, location: loc, body: string(raw), cookies: resp.Cookies()}
}

// in is b for subtest t (its failures are t's).
func (b *browser) in(t *testing.T) *browser {
	c := *b
	c.t = t
	return &c
}

// resolve is ref (a form's action) against the provider's issuer.
func (b *browser) resolve(ref string) string {
	base, _ := url.Parse(b.e.op.Issuer + "/")
	u, err := base.Parse(ref)
	if err != nil {
		b.t.Fatal(err)
	}
	return u.String()
}

func (b *browser) tenantURL(tenant, path string) string {
	return "http://" + tenant + ".localhost:" + b.e.envoyPort + path
}

// cookie is the jar's cookie name for tenant at path.
func (b *browser) cookie(tenant, path, name string) string {
	u, _ := url.Parse(b.tenantURL(tenant, path))
	for _, c := range b.jar.Cookies(u) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

var formAction = regexp.MustCompile(`<form[^>]*action="([^"]+)"`)

// toCallback starts tenant's login and plays the user at the provider
// (password form, when the provider has no session of this browser); it
// returns the callback URL the provider sent the browser to, not yet
// visited, and the login start's request cookie.
func (b *browser) toCallback(tenant, user, password string) (callback string, requestCookie string) {
	b.t.Helper()
	p := b.do("GET", b.tenantURL(tenant, "/auth/oidc/login?return_to="+url.QueryEscape("/app?x=1")), nil, nil)
	if p.code != http.StatusFound || !strings.HasPrefix(p.location, b.e.op.Issuer+"/auth?") {
		b.t.Fatalf("login start: %d %q %s", p.code, p.location, p.body)
	}
	q, _ := url.Parse(p.location)
	if q.Query().Get("code_challenge_method") != "S256" || q.Query().Get("nonce") == "" || q.Query().Get("state") == "" {
		b.t.Fatalf("authorization request %s", p.location)
	}
	requestCookie = b.cookie(tenant, "/auth/oidc/", "kailash_oidc_req")
	next := p.location
	for range 6 {
		p = b.do("GET", next, nil, nil)
		switch {
		case p.code == http.StatusOK && strings.Contains(p.body, `name="password"`):
			m := formAction.FindStringSubmatch(p.body)
			if m == nil {
				b.t.Fatalf("login form: %s", p.body)
			}
			p = b.do("POST", b.resolve(m[1]), url.Values{"login": {user}, "password": {password}}, nil)
			if p.code != http.StatusSeeOther {
				b.t.Fatalf("provider login: %d %s", p.code, p.body)
			}
		case p.code != http.StatusSeeOther && p.code != http.StatusFound:
			b.t.Fatalf("provider: %d at %s: %s\n%s", p.code, next, p.body, b.e.op.Log())
		}
		next = p.location
		if strings.HasPrefix(next, b.tenantURL(tenant, "/auth/oidc/callback?")) {
			return next, requestCookie
		}
	}
	b.t.Fatalf("the provider never sent the browser back (last %s)", next)
	return "", ""
}

// login runs the whole flow and returns the session cookie.
func (b *browser) login(tenant, user, password string) string {
	b.t.Helper()
	cb, _ := b.toCallback(tenant, user, password)
	p := b.do("GET", cb, nil, nil)
	if p.code != http.StatusSeeOther || p.location != b.tenantURL(tenant, "/app?x=1") {
		b.t.Fatalf("callback: %d %q %s", p.code, p.location, p.body)
	}
	sess := b.cookie(tenant, "/", "kailash_session")
	if sess == "" || b.cookie(tenant, "/auth/", "kailash_refresh") == "" {
		b.t.Fatalf("no session cookies after the callback: %v", p.cookies)
	}
	return sess
}

func (s *stack) lastUpstream() http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.upstream[len(s.upstream)-1]
}

func sessionCall(s *stack, tenant, sess string) reply {
	return s.mustDo(tenant+".localhost", "", map[string]string{"Cookie": "kailash_session=" + sess, "Sec-Fetch-Site": "same-origin"})
}

func TestOIDCLoginEndToEnd(t *testing.T) {
	e := startOIDCE2E(t)
	alice := e.browser(t)
	var sess string

	t.Run("login at the provider, session on a protected route with the ID token's identity", func(t *testing.T) {
		alice := alice.in(t)
		sess = alice.login("acme", "alice", oidcAlicePW)
		got := sessionCall(e.stack, "acme", sess)
		if got.code != 200 {
			t.Fatalf("protected route: %d %s", got.code, got.body)
		}
		if m := got.json(t); m["user"] != "alice" || m["tenant"] != "acme" {
			t.Fatalf("runner saw %s", got.body)
		}
		if roles := e.lastUpstream().Get(wire.HeaderRoles); roles != "auditor,data_scientist" {
			t.Fatalf("upstream roles %q, want the roles claim and the group's role", roles)
		}
		if m := e.metrics(t); !strings.Contains(m, `kailash_auth_logins_total{method="oidc",reason="",result="success"} 1`) {
			t.Fatalf("metrics:\n%s", grepLines(m, "kailash_auth_logins_total"))
		}
	})

	t.Run("refresh keeps the session", func(t *testing.T) {
		alice := alice.in(t)
		p := alice.do("POST", alice.tenantURL("acme", "/auth/refresh"), nil, map[string]string{"Origin": alice.tenantURL("acme", "")})
		if p.code != 200 {
			t.Fatalf("refresh: %d %s", p.code, p.body)
		}
		fresh := alice.cookie("acme", "/", "kailash_session")
		if fresh == "" || fresh == sess {
			t.Fatal("refresh set no new session cookie")
		}
		if got := sessionCall(e.stack, "acme", fresh); got.code != 200 {
			t.Fatalf("refreshed session: %d %s", got.code, got.body)
		}
		sess = fresh
	})

	t.Run("a user whose claims give no role is denied by the policy", func(t *testing.T) {
		carol := e.browser(t)
		if got := sessionCall(e.stack, "acme", carol.login("acme", "carol", "carol-pw")); got.code != http.StatusForbidden {
			t.Fatalf("carol: %d %s", got.code, got.body)
		}
	})

	t.Run("tampered state is refused", func(t *testing.T) {
		b := e.browser(t)
		cb, _ := b.toCallback("acme", "alice", oidcAlicePW)
		u, _ := url.Parse(cb)
		q := u.Query()
		q.Set("state", q.Get("state")+"x")
		u.RawQuery = q.Encode()
		if p := b.do("GET", u.String(), nil, nil); p.code != http.StatusBadRequest || !strings.Contains(p.body, "invalid_state") || b.cookie("acme", "/", "kailash_session") != "" {
			t.Fatalf("tampered state: %d %s", p.code, p.body)
		}
	})

	t.Run("replayed code and state are refused", func(t *testing.T) {
		b := e.browser(t)
		cb, reqCookie := b.toCallback("acme", "alice", oidcAlicePW)
		// Another browser of alice's: max_sessions is 1, so log out first.
		// Here the code is redeemed by a callback that the session limit
		// refuses; what matters is that it was redeemed.
		_ = b.do("GET", cb, nil, nil)
		replay := e.browser(t)
		u, _ := url.Parse(cb)
		replay.jar.SetCookies(u, []*http.Cookie{{Name: "kailash_oidc_req", Value: reqCookie, Path: "/auth/oidc/"}})
		if p := replay.do("GET", cb, nil, nil); p.code != http.StatusBadRequest || !strings.Contains(p.body, "invalid_state") {
			t.Fatalf("replayed callback (same state and cookie): %d %s", p.code, p.body)
		}
		// The code with a fresh login's state and cookie: the provider
		// refuses it (spent, and issued for another PKCE challenge).
		fresh, _ := replay.toCallback("acme", "alice", oidcAlicePW)
		f, _ := url.Parse(fresh)
		q := f.Query()
		q.Set("code", u.Query().Get("code"))
		f.RawQuery = q.Encode()
		if p := replay.do("GET", f.String(), nil, nil); p.code != http.StatusUnauthorized || !strings.Contains(p.body, "invalid_grant") {
			t.Fatalf("replayed code: %d %s", p.code, p.body)
		}
	})

	t.Run("a code issued to another tenant's client is refused", func(t *testing.T) {
		b := e.browser(t)
		acmeCB, _ := b.toCallback("acme", "alice", oidcAlicePW) // not redeemed
		globexCB, _ := b.toCallback("globex", "alice", oidcAlicePW)
		g, _ := url.Parse(globexCB)
		q := g.Query()
		a, _ := url.Parse(acmeCB)
		q.Set("code", a.Query().Get("code"))
		g.RawQuery = q.Encode()
		if p := b.do("GET", g.String(), nil, nil); p.code != http.StatusUnauthorized || !strings.Contains(p.body, "invalid_grant") {
			t.Fatalf("acme's code at globex: %d %s", p.code, p.body)
		}
		// Nor is acme's state accepted at globex's callback.
		if p := b.do("GET", strings.Replace(acmeCB, "acme.localhost", "globex.localhost", 1), nil, nil); p.code != http.StatusBadRequest {
			t.Fatalf("acme's answer at globex: %d %s", p.code, p.body)
		}
	})

	t.Run("max_sessions applies to OIDC logins", func(t *testing.T) {
		b := e.browser(t)
		cb, _ := b.toCallback("acme", "alice", oidcAlicePW)
		if p := b.do("GET", cb, nil, nil); p.code != http.StatusConflict || !strings.Contains(p.body, "too_many_sessions") {
			t.Fatalf("second session with max_sessions 1: %d %s", p.code, p.body)
		}
	})

	t.Run("logout revokes the session and ends the provider's session (RP-initiated)", func(t *testing.T) {
		alice := alice.in(t)
		idt := alice.cookie("acme", "/auth/oidc/", "kailash_oidc_idt")
		if idt == "" {
			t.Fatal("no ID token kept for id_token_hint")
		}
		p := alice.do("POST", alice.tenantURL("acme", "/auth/oidc/logout"), nil, map[string]string{"Origin": alice.tenantURL("acme", "")})
		loc, _ := url.Parse(p.location)
		if p.code != http.StatusSeeOther || !strings.HasPrefix(p.location, e.op.Issuer+"/session/end?") ||
			loc.Query().Get("id_token_hint") != idt || loc.Query().Get("client_id") != oidcAcmeClient ||
			loc.Query().Get("post_logout_redirect_uri") != alice.tenantURL("acme", "/signed-out") {
			t.Fatalf("logout: %d %q %s", p.code, p.location, p.body)
		}
		if alice.cookie("acme", "/", "kailash_session") != "" || alice.cookie("acme", "/auth/", "kailash_refresh") != "" {
			t.Fatal("session cookies not cleared")
		}
		if got := sessionCall(e.stack, "acme", sess); got.code != http.StatusUnauthorized {
			t.Fatalf("the logged-out session: %d %s", got.code, got.body)
		}
		// At the provider: its confirmation form, then back to our page.
		confirm := alice.do("GET", p.location, nil, nil)
		m := formAction.FindStringSubmatch(confirm.body)
		xsrf := regexp.MustCompile(`name="xsrf" value="([^"]+)"`).FindStringSubmatch(confirm.body)
		if confirm.code != 200 || m == nil || xsrf == nil {
			t.Fatalf("end_session: %d %s", confirm.code, confirm.body)
		}
		done := alice.do("POST", alice.resolve(m[1]), url.Values{"xsrf": {xsrf[1]}, "logout": {"yes"}}, nil)
		if done.code != http.StatusSeeOther || done.location != alice.tenantURL("acme", "/signed-out") {
			t.Fatalf("end_session confirm: %d %q", done.code, done.location)
		}
		// The provider forgot the browser: a new login asks for the password.
		start := alice.do("GET", alice.tenantURL("acme", "/auth/oidc/login"), nil, nil)
		prompt := alice.do("GET", start.location, nil, nil)
		form := alice.do("GET", prompt.location, nil, nil)
		if !strings.Contains(form.body, `name="password"`) {
			t.Fatalf("after logout the provider did not ask for the password: %d %s", form.code, form.body)
		}
		// And the freed session slot lets alice log in again.
		if got := sessionCall(e.stack, "acme", e.browser(t).login("acme", "alice", oidcAlicePW)); got.code != 200 {
			t.Fatalf("login after logout: %d %s", got.code, got.body)
		}
	})
}
