package login

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/internal/wire"
)

// fakeOP is an in-process OpenID provider for the handler's negative
// cases: discovery, JWKS, and a token endpoint that checks the client
// secret, the redirect URI and PKCE (S256), hands each code out once and
// answers with an ID token whose claims the test may change (mod).
type fakeOP struct {
	t   *testing.T
	srv *httptest.Server
	key jwk.Key

	mu    sync.Mutex
	codes map[string]fakeCode
	mod   func(map[string]any) // changes the next ID tokens' claims
	none  bool                 // sign with alg none
}

type fakeCode struct{ challenge, nonce, redirect string }

const (
	fakeClientID     = "kailash-acme"
	fakeClientSecret = "s3cret-client-value"
)

func newFakeOP(t *testing.T) *fakeOP {
	t.Helper()
	pk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := jwk.FromRaw(pk)
	_ = key.Set(jwk.KeyIDKey, "op-1")
	_ = key.Set(jwk.AlgorithmKey, jwa.ES256)
	op := &fakeOP{t: t, key: key, codes: map[string]fakeCode{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		u := op.srv.URL
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": u, "authorization_endpoint": u + "/authorize",
			"token_endpoint": u + "/token", "jwks_uri": u + "/jwks", "end_session_endpoint": u + "/session/end",
			"token_endpoint_auth_methods_supported": []string{"client_secret_basic"}})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		pub, _ := op.key.PublicKey()
		set := jwk.NewSet()
		_ = set.AddKey(pub)
		_ = json.NewEncoder(w).Encode(set)
	})
	mux.HandleFunc("POST /token", op.token)
	op.srv = httptest.NewServer(mux)
	t.Cleanup(op.srv.Close)
	return op
}

func (op *fakeOP) token(w http.ResponseWriter, r *http.Request) {
	id, secret, ok := r.BasicAuth()
	_ = r.ParseForm()
	fail := func(code int, e string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": e})
	}
	if !ok || id != fakeClientID || secret != fakeClientSecret {
		fail(401, "invalid_client")
		return
	}
	op.mu.Lock()
	c, known := op.codes[r.PostForm.Get("code")]
	delete(op.codes, r.PostForm.Get("code"))
	mod, none := op.mod, op.none
	op.mu.Unlock()
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	if !known || r.PostForm.Get("grant_type") != "authorization_code" || r.PostForm.Get("redirect_uri") != c.redirect ||
		base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge {
		fail(400, "invalid_grant")
		return
	}
	now := time.Now()
	claims := map[string]any{"iss": op.srv.URL, "sub": "alice", "aud": fakeClientID, "exp": now.Add(5 * time.Minute).Unix(),
		"iat": now.Unix(), "nonce": c.nonce, "email": "alice@example.com", "groups": []string{"Engineering"}, "roles": []string{"auditor"}}
	if mod != nil {
		mod(claims)
	}
	payload, _ := json.Marshal(claims)
	var idt string
	if none {
		idt = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + base64.RawURLEncoding.EncodeToString(payload) + "."
	} else {
		hdr := jws.NewHeaders()
		_ = hdr.Set(jws.KeyIDKey, "op-1")
		b, err := jws.Sign(payload, jws.WithKey(jwa.ES256, op.key, jws.WithProtectedHeaders(hdr)))
		if err != nil {
			op.t.Error(err)
		}
		idt = string(b)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at-" + rand.Text(), "token_type": "Bearer", "expires_in": 300, "id_token": idt})
}

// authorize plays the provider's login: it reads the authorization
// request and returns a code for it.
func (op *fakeOP) authorize(t *testing.T, loc *url.URL) (code, state string) {
	t.Helper()
	q := loc.Query()
	if loc.Path != "/authorize" || q.Get("response_type") != "code" || q.Get("client_id") != fakeClientID ||
		q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("nonce") == "" || q.Get("state") == "" ||
		!slices.Contains(strings.Fields(q.Get("scope")), "openid") {
		t.Fatalf("authorization request %s", loc)
	}
	code = "code-" + rand.Text()
	op.mu.Lock()
	op.codes[code] = fakeCode{challenge: q.Get("code_challenge"), nonce: q.Get("nonce"), redirect: q.Get("redirect_uri")}
	op.mu.Unlock()
	return code, q.Get("state")
}

func (op *fakeOP) set(mod func(map[string]any), none bool) {
	op.mu.Lock()
	defer op.mu.Unlock()
	op.mod, op.none = mod, none
}

type oidcHarness struct {
	srv *Service
	mux *http.ServeMux
	op  *fakeOP
	log *bytes.Buffer
}

func startOIDC(t *testing.T, maxSessions int) *oidcHarness {
	t.Helper()
	return startOIDCWith(t, newFakeOP(t), maxSessions, "")
}

// startOIDCWith is a login service with acme's OIDC login at op, its
// state in Redis at redisAddr ("": in memory).
func startOIDCWith(t *testing.T, op *fakeOP, maxSessions int, redisAddr string) *oidcHarness {
	t.Helper()
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(fakeClientSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Sessions.MaxSessions = maxSessions
	cfg.Sessions.InsecureCookies = true
	cfg.Tenants[0].Login.OIDC = &config.OIDCLogin{Issuer: op.srv.URL, ClientID: fakeClientID, ClientSecretFile: secretFile,
		RedirectURL: config.MustURL("http://acme.localhost/auth/oidc/callback"), PostLogoutRedirectURL: config.MustURL("http://acme.localhost/bye"),
		GroupRoles: map[string]string{"Engineering": "data_scientist"}, Attributes: map[string]string{"email": "email"}}
	if redisAddr != "" {
		cfg.Sessions.Redis = &config.Redis{Addr: config.MustHostPort(redisAddr), Timeout: time.Second}
	}
	cfg.SetDefaults()
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&syncWriter{w: &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := New(cfg, Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	mux := http.NewServeMux()
	srv.Routes(mux)
	return &oidcHarness{srv: srv, mux: mux, op: op, log: &buf}
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (h *oidcHarness) do(method, target string, cookies []*http.Cookie) *http.Response {
	req := httptest.NewRequest(method, target, nil)
	req.Header.Set(wire.HeaderTenant, "acme")
	req.Header.Set("Origin", "http://acme.localhost")
	for _, c := range cookies {
		req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	rec := httptest.NewRecorder()
	h.mux.ServeHTTP(rec, req)
	return rec.Result()
}

// start begins a login and plays the provider: the callback URL and the
// request cookie.
func (h *oidcHarness) start(t *testing.T, returnTo string) (callback string, cookie *http.Cookie, code string) {
	t.Helper()
	resp := h.do("GET", "/auth/oidc/login?return_to="+url.QueryEscape(returnTo), nil)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("login start: %d", resp.StatusCode)
	}
	loc, _ := url.Parse(resp.Header.Get("Location"))
	for _, c := range resp.Cookies() {
		if c.Name == CookieOIDCRequest {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.Path != "/auth/oidc/" || cookie.SameSite != http.SameSiteLaxMode {
		t.Fatalf("request cookie %+v", cookie)
	}
	if strings.Contains(resp.Header.Get("Location"), strings.Split(cookie.Value, ".")[1]) {
		t.Fatal("the PKCE verifier left for the provider")
	}
	code, state := h.op.authorize(t, loc)
	return "/auth/oidc/callback?code=" + url.QueryEscape(code) + "&state=" + url.QueryEscape(state), cookie, code
}

func errorOf(t *testing.T, resp *http.Response) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return e.Error
}

func TestOIDCLoginSession(t *testing.T) {
	h := startOIDC(t, 0)
	cb, ck, code := h.start(t, "/app?tab=1")
	resp := h.do("GET", cb, []*http.Cookie{ck})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/app?tab=1" {
		t.Fatalf("callback: %d %q %s", resp.StatusCode, resp.Header.Get("Location"), errorOf(t, resp))
	}
	sess, idt := cookieOf(resp, CookieSession), cookieOf(resp, CookieOIDCIDToken)
	if sess == "" || cookieOf(resp, CookieRefresh) == "" || idt == "" {
		t.Fatalf("cookies: %v", resp.Header.Values("Set-Cookie"))
	}
	id, ours, err := h.srv.VerifySession(t.Context(), sess, "acme")
	if err != nil || !ours {
		t.Fatalf("session: %v %v", ours, err)
	}
	if id.Subject != "alice" || id.Method != "oidc" || !slices.Equal(id.Roles, []string{"auditor", "data_scientist"}) ||
		!slices.Equal(id.Groups, []string{"Engineering"}) || id.Attributes["email"] != "alice@example.com" {
		t.Fatalf("identity %+v", id)
	}
	if _, _, err := h.srv.VerifySession(t.Context(), sess, "globex"); err == nil {
		t.Fatal("acme's session accepted for globex")
	}

	// The same answer again (same cookie, same URL): refused, no session.
	again := h.do("GET", cb, []*http.Cookie{ck})
	if again.StatusCode != http.StatusBadRequest || errorOf(t, again) != "invalid_state" || cookieOf(again, CookieSession) != "" {
		t.Fatalf("replayed callback: %d", again.StatusCode)
	}
	// The used code with a fresh login of this browser: its verifier is
	// another, and the code is spent at the provider.
	cb2, ck2, _ := h.start(t, "/")
	u, _ := url.Parse(cb2)
	replay := "/auth/oidc/callback?code=" + url.QueryEscape(code) + "&state=" + url.QueryEscape(u.Query().Get("state"))
	if r := h.do("GET", replay, []*http.Cookie{ck2}); r.StatusCode != http.StatusUnauthorized || errorOf(t, r) != "invalid_grant" {
		t.Fatalf("replayed code: %d", r.StatusCode)
	}

	// Logout: the session is revoked and the browser goes to the
	// provider's end_session_endpoint with the hint and our landing page.
	out := h.do("POST", "/auth/oidc/logout", []*http.Cookie{{Name: CookieSession, Value: sess}, {Name: CookieOIDCIDToken, Value: idt}})
	loc, _ := url.Parse(out.Header.Get("Location"))
	if out.StatusCode != http.StatusSeeOther || loc.Scheme+"://"+loc.Host+loc.Path != h.op.srv.URL+"/session/end" ||
		loc.Query().Get("id_token_hint") != idt || loc.Query().Get("post_logout_redirect_uri") != "http://acme.localhost/bye" ||
		loc.Query().Get("client_id") != fakeClientID {
		t.Fatalf("logout: %d %q", out.StatusCode, out.Header.Get("Location"))
	}
	if c := cookieAttr(out, CookieOIDCIDToken); c == nil || c.MaxAge >= 0 || c.Path != "/auth/oidc/" {
		t.Fatalf("ID token cookie not cleared: %v", out.Header.Values("Set-Cookie"))
	}
	if c := cookieAttr(out, CookieSession); c == nil || c.MaxAge >= 0 {
		t.Fatalf("session cookie not cleared: %v", out.Header.Values("Set-Cookie"))
	}
	if _, _, err := h.srv.VerifySession(t.Context(), sess, "acme"); err == nil {
		t.Fatal("session still valid after logout")
	}

	logs := h.log.String()
	for what, secret := range map[string]string{"code": code, "client secret": fakeClientSecret, "id token": idt, "session": sess,
		"verifier": strings.Split(ck.Value, ".")[1]} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log holds the %s", what)
		}
	}
	if !strings.Contains(logs, "reason=code_refused") || !strings.Contains(logs, "reason=unknown_state") {
		t.Errorf("refusals not logged:\n%s", logs)
	}
}

func cookieOf(resp *http.Response, name string) string {
	if c := cookieAttr(resp, name); c != nil {
		return c.Value
	}
	return ""
}

func cookieAttr(resp *http.Response, name string) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func TestOIDCCallbackRefusals(t *testing.T) {
	h := startOIDC(t, 0)
	cases := []struct {
		name   string
		mod    func(map[string]any)
		none   bool
		change func(cb string, ck *http.Cookie) (string, []*http.Cookie)
		code   int
		error  string
		reason string
	}{
		{name: "wrong nonce", mod: func(c map[string]any) { c["nonce"] = "another-login" }, code: 401, error: "invalid_id_token", reason: "wrong_nonce"},
		{name: "no nonce", mod: func(c map[string]any) { delete(c, "nonce") }, code: 401, error: "invalid_id_token", reason: "wrong_nonce"},
		{name: "wrong audience", mod: func(c map[string]any) { c["aud"] = "another-client" }, code: 401, error: "invalid_id_token", reason: "wrong_audience"},
		{name: "wrong issuer", mod: func(c map[string]any) { c["iss"] = "https://evil.example" }, code: 401, error: "invalid_id_token", reason: "wrong_issuer"},
		{name: "azp of another client", mod: func(c map[string]any) { c["azp"] = "another-client" }, code: 401, error: "invalid_id_token", reason: "wrong_azp"},
		{name: "several audiences, no azp", mod: func(c map[string]any) { c["aud"] = []string{fakeClientID, "other"} }, code: 401, error: "invalid_id_token", reason: "wrong_azp"},
		{name: "expired", mod: func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() }, code: 401, error: "invalid_id_token", reason: "expired"},
		{name: "alg none", none: true, code: 401, error: "invalid_id_token", reason: "alg_none"},
		{name: "tampered state", change: func(cb string, ck *http.Cookie) (string, []*http.Cookie) {
			return strings.Replace(cb, "state=", "state=X", 1), []*http.Cookie{ck}
		}, code: 400, error: "invalid_state", reason: "state_mismatch"},
		{name: "missing state", change: func(cb string, ck *http.Cookie) (string, []*http.Cookie) {
			u, _ := url.Parse(cb)
			return "/auth/oidc/callback?code=" + url.QueryEscape(u.Query().Get("code")), []*http.Cookie{ck}
		}, code: 400, error: "invalid_state", reason: "state_mismatch"},
		{name: "no request cookie", change: func(cb string, _ *http.Cookie) (string, []*http.Cookie) { return cb, nil },
			code: 400, error: "invalid_state", reason: "missing_state"},
		{name: "tampered cookie (return_to)", change: func(cb string, ck *http.Cookie) (string, []*http.Cookie) {
			p := strings.Split(ck.Value, ".")
			p[3] = base64.RawURLEncoding.EncodeToString([]byte("/admin"))
			return cb, []*http.Cookie{{Name: ck.Name, Value: strings.Join(p, ".")}}
		}, code: 400, error: "invalid_state", reason: "unknown_state"},
		{name: "tampered cookie (verifier)", change: func(cb string, ck *http.Cookie) (string, []*http.Cookie) {
			p := strings.Split(ck.Value, ".")
			p[1] = strings.Repeat("A", len(p[1]))
			return cb, []*http.Cookie{{Name: ck.Name, Value: strings.Join(p, ".")}}
		}, code: 400, error: "invalid_state", reason: "unknown_state"},
		{name: "answer of another provider (RFC 9207 iss)", change: func(cb string, ck *http.Cookie) (string, []*http.Cookie) {
			return cb + "&iss=" + url.QueryEscape("https://evil.example"), []*http.Cookie{ck}
		}, code: 401, error: "invalid_issuer", reason: "wrong_issuer"},
		{name: "provider error", change: func(cb string, ck *http.Cookie) (string, []*http.Cookie) {
			u, _ := url.Parse(cb)
			return "/auth/oidc/callback?error=access_denied&state=" + url.QueryEscape(u.Query().Get("state")), []*http.Cookie{ck}
		}, code: 401, error: "idp_error", reason: "idp_error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h.op.set(tc.mod, tc.none)
			defer h.op.set(nil, false)
			cb, ck, _ := h.start(t, "/")
			cookies := []*http.Cookie{ck}
			if tc.change != nil {
				cb, cookies = tc.change(cb, ck)
			}
			resp := h.do("GET", cb, cookies)
			if resp.StatusCode != tc.code || cookieOf(resp, CookieSession) != "" {
				t.Fatalf("%d, want %d", resp.StatusCode, tc.code)
			}
			if e := errorOf(t, resp); e != tc.error {
				t.Fatalf("error %q, want %q", e, tc.error)
			}
			if !strings.Contains(h.log.String(), "reason="+tc.reason) {
				t.Fatalf("reason %s not logged:\n%s", tc.reason, h.log.String())
			}
		})
	}
	t.Run("a provider error consumes the login", func(t *testing.T) {
		cb, ck, _ := h.start(t, "/")
		u, _ := url.Parse(cb)
		st := url.QueryEscape(u.Query().Get("state"))
		if r := h.do("GET", "/auth/oidc/callback?error=access_denied&state="+st, []*http.Cookie{ck}); r.StatusCode != 401 {
			t.Fatalf("provider error: %d", r.StatusCode)
		}
		if r := h.do("GET", cb, []*http.Cookie{ck}); r.StatusCode != 400 {
			t.Fatalf("the code after a provider error: %d", r.StatusCode)
		}
	})
	t.Run("unsafe return_to", func(t *testing.T) {
		for _, rt := range []string{"//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"} {
			if r := h.do("GET", "/auth/oidc/login?return_to="+url.QueryEscape(rt), nil); r.StatusCode != http.StatusBadRequest {
				t.Errorf("return_to %q: %d", rt, r.StatusCode)
			}
		}
	})
	t.Run("tenant without oidc login", func(t *testing.T) {
		req := httptest.NewRequest("GET", "/auth/oidc/login", nil)
		req.Header.Set(wire.HeaderTenant, "globex")
		rec := httptest.NewRecorder()
		h.mux.ServeHTTP(rec, req)
		if rec.Code != http.StatusNotFound {
			t.Fatalf("globex: %d", rec.Code)
		}
	})
}

func TestOIDCMaxSessions(t *testing.T) {
	h := startOIDC(t, 1)
	cb, ck, _ := h.start(t, "/")
	if r := h.do("GET", cb, []*http.Cookie{ck}); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("first login: %d", r.StatusCode)
	}
	cb, ck, _ = h.start(t, "/")
	if r := h.do("GET", cb, []*http.Cookie{ck}); r.StatusCode != http.StatusConflict || errorOf(t, r) != "too_many_sessions" {
		t.Fatalf("second login with max_sessions 1: %d", r.StatusCode)
	}
}

func TestOIDCLogoutCSRF(t *testing.T) {
	h := startOIDC(t, 0)
	cb, ck, _ := h.start(t, "/")
	r := h.do("GET", cb, []*http.Cookie{ck})
	sess := cookieOf(r, CookieSession)
	req := httptest.NewRequest("POST", "/auth/oidc/logout", nil)
	req.Header.Set(wire.HeaderTenant, "acme")
	req.Header.Set("Origin", "https://evil.example")
	req.AddCookie(&http.Cookie{Name: CookieSession, Value: sess})
	rec := httptest.NewRecorder()
	h.mux.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Fatalf("cross-site logout: %d", rec.Code)
	}
	if _, _, err := h.srv.VerifySession(t.Context(), sess, "acme"); err != nil {
		t.Fatalf("the session was revoked by a cross-site post: %v", err)
	}
}

// Replicas sharing sessions.redis: a login started on one completes on
// the other, once.
func TestOIDCReplicasShareLogins(t *testing.T) {
	rd := testenv.StartRedis(t)
	op := newFakeOP(t)
	a, b := startOIDCWith(t, op, 0, rd.Addr), startOIDCWith(t, op, 0, rd.Addr)
	cb, ck, _ := a.start(t, "/x")
	if n, err := rd.Client().ZCard(t.Context(), "kailash:oidc:req:acme").Result(); err != nil || n != 1 {
		t.Fatalf("pending logins in Redis: %d %v", n, err)
	}
	if r := b.do("GET", cb, []*http.Cookie{ck}); r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/x" {
		t.Fatalf("callback on the other replica: %d %s", r.StatusCode, errorOf(t, r))
	}
	if r := a.do("GET", cb, []*http.Cookie{ck}); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("the same answer on the first replica: %d", r.StatusCode)
	}
	rd.Stop()
	if r := a.do("GET", "/auth/oidc/login", nil); r.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("login start with Redis down: %d", r.StatusCode)
	}
}
