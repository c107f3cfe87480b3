package login

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/extauthz/jwtauth"
	"github.com/kailash-gw/kailash/extauthz/lockout"
	"github.com/kailash-gw/kailash/extauthz/oidc"
	"github.com/kailash-gw/kailash/extauthz/samlsp"
	"github.com/kailash-gw/kailash/extauthz/session"
	"github.com/kailash-gw/kailash/internal/audit"
	"github.com/kailash-gw/kailash/internal/config"
)

// Browser login with an OpenID provider (login.oidc): the authorization
// code flow with PKCE (S256), state and nonce.
//
//	GET  /auth/oidc/login?return_to=/path  → 302 to the provider
//	GET  /auth/oidc/callback?code&state    → our session cookies, 303 to return_to
//	POST /auth/oidc/logout                 → session revoked, 303 to the provider's end_session_endpoint
//
// What a login start knows lives in the browser and, as a digest, on the
// server: the start sets CookieOIDCRequest to state, PKCE verifier, nonce
// and return_to, and records the SHA-256 of that value in a per-tenant
// store of pending logins (in memory, or in sessions.redis so the callback
// may reach another replica), bounded per tenant and single use. The
// callback needs the cookie, the same state in the URL, and the digest
// still pending (taken once): a missing, mismatched, tampered (any part of
// the cookie changes the digest), expired or replayed state is refused
// before the code is exchanged. The verifier never leaves the browser and
// us, so a stolen code is useless; the ID token must carry the nonce of
// this browser's cookie.

// Cookies of the OIDC login, both HttpOnly on /auth/oidc/ and SameSite=Lax
// (the provider's redirect back is a top-level GET navigation).
const (
	// CookieOIDCRequest carries a started login to its callback.
	CookieOIDCRequest = "kailash_oidc_req"
	// CookieOIDCIDToken keeps the ID token for logout's id_token_hint.
	CookieOIDCIDToken = "kailash_oidc_idt"
)

const (
	oidcCookiePath = "/auth/oidc/"
	// oidcRequestTTL is how long a started login may take at the provider.
	oidcRequestTTL = 10 * time.Minute
	// oidcStartWindow is the window of login.oidc.starts_per_minute.
	oidcStartWindow = time.Minute
	// maxOIDCCookie bounds the request cookie read (ours are < 400 bytes
	// with a return_to of the longest SafeRelayState allows).
	maxOIDCCookie = 2048
	// maxIDTokenCookie: a longer ID token is not kept for id_token_hint
	// (logout then names the client only).
	maxIDTokenCookie = 3500
	// oidcStartsPrefix separates OIDC start counters from SAML's.
	oidcStartsPrefix = "oidc/"
)

// Reasons of a refused OIDC login (metric labels, logs).
const (
	reasonWrongNonce envoyauth.Reason = "wrong_nonce"
	reasonWrongAZP   envoyauth.Reason = "wrong_azp"
)

// oidcLogins holds the tenants' relying parties. One store of pending
// logins serves them all, across reloads.
type oidcLogins struct {
	ctx      context.Context // the providers' key refresh loops; ends with close
	stop     context.CancelFunc
	requests samlsp.RequestStore
	log      *slog.Logger

	mu  sync.Mutex // guards rps
	rps map[string]*oidcEntry
}

// oidcEntry is one tenant's relying party.
type oidcEntry struct {
	cfg    config.OIDCLogin
	secret string
	keys   *oidc.Keys
	idv    oidc.Refreshing[*envoyauth.Identity]
	client *http.Client
	cancel context.CancelFunc // its key refresh loop
}

func newOIDCLogins(requests samlsp.RequestStore, log *slog.Logger) *oidcLogins {
	ctx, stop := context.WithCancel(context.Background())
	return &oidcLogins{ctx: ctx, stop: stop, requests: requests, log: log, rps: map[string]*oidcEntry{}}
}

// prepare builds the relying parties of cfg, reusing those whose config
// and secret are unchanged. It does no network I/O.
func (s *oidcLogins) prepare(cfg *config.Config, now func() time.Time) (map[string]*oidcEntry, error) {
	s.mu.Lock()
	old := s.rps
	s.mu.Unlock()
	next := map[string]*oidcEntry{}
	for _, tc := range cfg.Tenants {
		oc := tc.Login.OIDC
		if oc == nil {
			continue
		}
		secret, err := oc.ClientSecret(cfg)
		if err != nil {
			return nil, fmt.Errorf("tenant %q: %w", tc.ID, err)
		}
		if e := old[tc.ID]; e != nil && e.secret == secret && reflect.DeepEqual(e.cfg, *oc) {
			next[tc.ID] = e
			continue
		}
		e, err := newOIDCEntry(tc.ID, *oc, secret, s.log, now)
		if err != nil {
			return nil, fmt.Errorf("tenant %q: login.oidc: %w", tc.ID, err)
		}
		next[tc.ID] = e
	}
	return next, nil
}

func newOIDCEntry(tenant string, oc config.OIDCLogin, secret string, log *slog.Logger, now func() time.Time) (*oidcEntry, error) {
	client := &http.Client{Timeout: oc.Timeout}
	keys, err := oidc.New(oidc.Config{Issuer: oc.Issuer, DiscoveryURL: oc.DiscoveryURL.String(), Timeout: oc.Timeout},
		oidc.WithHTTPClient(client), oidc.WithLogger(log), oidc.WithClock(now))
	if err != nil {
		return nil, err
	}
	no := false
	v, err := jwtauth.NewVerifier(tenant, config.JWT{Issuer: oc.Issuer, Audiences: []string{oc.ClientID}, ClockSkew: oc.ClockSkew,
		RolesClaim: oc.RolesClaim, TenantClaim: oc.TenantClaim, RequireTenantClaim: &no}, keys, jwtauth.VerifierOptions{Now: now, CacheSize: -1})
	if err != nil {
		return nil, err
	}
	return &oidcEntry{cfg: oc, secret: secret, keys: keys, idv: oidc.Refreshing[*envoyauth.Identity]{Verifier: v, Keys: keys}, client: client}, nil
}

// commit puts next in force: it starts the key refresh of new relying
// parties and stops that of those no longer used.
func (s *oidcLogins) commit(next map[string]*oidcEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range next {
		if e.cancel != nil {
			continue
		}
		ctx, cancel := context.WithCancel(s.ctx)
		e.cancel = cancel
		go e.keys.Run(ctx)
	}
	for id, e := range s.rps {
		if next[id] != e && e.cancel != nil {
			e.cancel()
		}
	}
	s.rps = next
}

func (s *oidcLogins) close() { s.stop() }

func (s *oidcLogins) rp(tenant string) *oidcEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rps[tenant]
}

// endpoints are the provider's, from discovery; with none known yet it
// waits (bounded by ctx) for the fetch the key source starts.
func (e *oidcEntry) endpoints(ctx context.Context) (oidc.Endpoints, error) {
	if ep, ok := e.keys.Endpoints(); ok {
		return ep, nil
	}
	if _, err := e.keys.Keys(ctx); err != nil {
		return oidc.Endpoints{}, err
	}
	if ep, ok := e.keys.Endpoints(); ok {
		return ep, nil
	}
	return oidc.Endpoints{}, fmt.Errorf("%w: %s: the discovery document names no authorization and token endpoints", oidc.ErrUnavailable, e.cfg.Issuer)
}

// oauth2 is the client config for endpoints ep.
func (e *oidcEntry) oauth2(ep oidc.Endpoints) *oauth2.Config {
	style := oauth2.AuthStyleInHeader
	if e.secret == "" || (len(ep.TokenAuthMethods) > 0 && !slices.Contains(ep.TokenAuthMethods, "client_secret_basic") &&
		slices.Contains(ep.TokenAuthMethods, "client_secret_post")) {
		style = oauth2.AuthStyleInParams
	}
	return &oauth2.Config{ClientID: e.cfg.ClientID, ClientSecret: e.secret, RedirectURL: e.cfg.RedirectURL.String(), Scopes: e.cfg.Scopes,
		Endpoint: oauth2.Endpoint{AuthURL: ep.Authorization, TokenURL: ep.Token, AuthStyle: style}}
}

// oidcPending is what a login start hands its callback (CookieOIDCRequest).
type oidcPending struct {
	state, verifier, nonce, returnTo string
}

func (p oidcPending) cookie() string {
	return p.state + "." + p.verifier + "." + p.nonce + "." + base64.RawURLEncoding.EncodeToString([]byte(p.returnTo))
}

// id is the digest the store of pending logins holds for p's cookie.
func oidcRequestID(cookie string) string {
	sum := sha256.Sum256([]byte("kailash-oidc-login\x00" + cookie))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func parseOIDCPending(v string) (oidcPending, bool) {
	if len(v) > maxOIDCCookie {
		return oidcPending{}, false
	}
	parts := strings.Split(v, ".")
	if len(parts) != 4 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return oidcPending{}, false
	}
	rt, err := base64.RawURLEncoding.DecodeString(parts[3])
	if err != nil || !samlsp.SafeRelayState(string(rt)) {
		return oidcPending{}, false
	}
	return oidcPending{state: parts[0], verifier: parts[1], nonce: parts[2], returnTo: string(rt)}, true
}

// randomToken is 130 random bits in base32 (no ".").
func randomToken() string { return rand.Text() }

func (a *Service) oidcRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /auth/oidc/login", a.oidcLogin)
	mux.HandleFunc("GET /auth/oidc/callback", a.oidcCallback)
	mux.HandleFunc("POST /auth/oidc/logout", a.oidcLogout)
}

// oidcTenant resolves the tenant and its relying party, or writes the error.
func (a *Service) oidcTenant(w http.ResponseWriter, r *http.Request) (config.Tenant, *oidcEntry, bool) {
	t, ok := a.tenantOf(r)
	if !ok {
		authError(w, http.StatusNotFound, "unknown_tenant", "no tenant serves this host")
		return t, nil, false
	}
	e := a.oidc.rp(t.ID)
	if e == nil {
		authError(w, http.StatusNotFound, "oidc_not_configured", "this tenant has no OIDC login")
		return t, nil, false
	}
	return t, e, true
}

func (a *Service) oidcCookie(w http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: oidcCookiePath, MaxAge: maxAge,
		HttpOnly: true, Secure: a.secure, SameSite: http.SameSiteLaxMode})
}

// oidcStartAllowed counts a login start of the client address for t and
// refuses it (429) beyond login.oidc.starts_per_minute, or (503) when the
// counter cannot be reached. It writes the error response itself.
func (a *Service) oidcStartAllowed(w http.ResponseWriter, r *http.Request, t config.Tenant, limit int) bool {
	addr := clientAddr(r)
	n, err := a.shared.starts.Incr(r.Context(), oidcStartsPrefix+t.ID+"/"+lockout.AddressKey(addr), oidcStartWindow)
	if err != nil {
		a.logins.WithLabelValues("oidc", "error", "rate_store").Inc()
		a.log.Warn("oidc login refused: cannot count login starts", "tenant", t.ID, "err", err)
		authError(w, http.StatusServiceUnavailable, "oidc_unavailable", "single sign-on is unavailable; try again later")
		return false
	}
	if n > limit {
		a.logins.WithLabelValues("oidc", "refused", "rate_limited").Inc()
		if n == limit+1 {
			a.log.Warn("oidc login starts rate-limited", "tenant", t.ID, "addr", addr, "limit_per_minute", limit)
		}
		w.Header().Set("Retry-After", fmt.Sprint(int(oidcStartWindow.Seconds())))
		authError(w, http.StatusTooManyRequests, "rate_limited", "too many sign-on attempts from this address; try again later")
		return false
	}
	return true
}

// oidcLogin starts a login: GET /auth/oidc/login?return_to=/path.
func (a *Service) oidcLogin(w http.ResponseWriter, r *http.Request) {
	t, e, ok := a.oidcTenant(w, r)
	if !ok {
		return
	}
	returnTo := r.URL.Query().Get("return_to")
	if returnTo == "" {
		returnTo = "/"
	}
	if !samlsp.SafeRelayState(returnTo) {
		authError(w, http.StatusBadRequest, "bad_return_to", "return_to must be a same-site path")
		return
	}
	if !a.oidcStartAllowed(w, r, t, e.cfg.StartsPerMinute) {
		return
	}
	ep, err := e.endpoints(r.Context())
	if err != nil {
		a.logins.WithLabelValues("oidc", "error", "provider_unavailable").Inc()
		a.log.Warn("oidc login unavailable: the provider's discovery document is not known", "tenant", t.ID, "issuer", e.cfg.Issuer, "err", err)
		authError(w, http.StatusServiceUnavailable, "oidc_unavailable", "single sign-on is unavailable; try again later")
		return
	}
	p := oidcPending{state: randomToken(), verifier: oauth2.GenerateVerifier(), nonce: randomToken(), returnTo: returnTo}
	c := p.cookie()
	err = a.oidc.requests.Remember(r.Context(), t.ID, oidcRequestID(c), a.now().Add(oidcRequestTTL), e.cfg.MaxPending)
	if errors.Is(err, samlsp.ErrTooManyRequests) {
		a.logins.WithLabelValues("oidc", "refused", "too_many_pending").Inc()
		a.log.Warn("oidc login refused: the tenant's pending logins are at login.oidc.max_pending", "tenant", t.ID, "max", e.cfg.MaxPending)
		w.Header().Set("Retry-After", fmt.Sprint(int(oidcRequestTTL.Seconds())))
		authError(w, http.StatusServiceUnavailable, "too_many_pending_logins", "too many sign-ons are in progress for this tenant; try again later")
		return
	}
	if err != nil {
		a.log.Warn("oidc login refused: cannot remember the request", "tenant", t.ID, "err", err)
		authError(w, http.StatusServiceUnavailable, "oidc_unavailable", "single sign-on is unavailable; try again later")
		return
	}
	a.oidcCookie(w, CookieOIDCRequest, c, int(oidcRequestTTL.Seconds()))
	loc := e.oauth2(ep).AuthCodeURL(p.state, oauth2.S256ChallengeOption(p.verifier), oauth2.SetAuthURLParam("nonce", p.nonce))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, loc, http.StatusFound)
}

// oidcCallback is the redirect URI: a valid answer ends in our session
// (cookies as after an LDAP or SAML login) and a 303 to return_to.
func (a *Service) oidcCallback(w http.ResponseWriter, r *http.Request) {
	t, e, ok := a.oidcTenant(w, r)
	if !ok {
		return
	}
	ctx, addr, q := r.Context(), clientAddr(r), r.URL.Query()
	w.Header().Set("Cache-Control", "no-store")
	refuse := func(code int, kind, msg, result, reason, user string, err error) {
		a.logins.WithLabelValues("oidc", result, reason).Inc()
		a.log.Info("login attempt", "method", "oidc", "tenant", t.ID, "user", user, "addr", addr, "result", result, "reason", reason, "err", err)
		authError(w, code, kind, msg)
	}
	badState := func(reason string) {
		refuse(http.StatusBadRequest, "invalid_state", "the sign-on answer does not match a sign-on started in this browser", "failure", reason, "", nil)
	}
	unavailable := func(reason string, err error) {
		refuse(http.StatusServiceUnavailable, "oidc_unavailable", "single sign-on is unavailable; try again later", "error", reason, "", err)
	}
	ck, err := r.Cookie(CookieOIDCRequest)
	if err != nil || ck.Value == "" {
		badState("missing_state")
		return
	}
	a.oidcCookie(w, CookieOIDCRequest, "", -1)
	p, ok := parseOIDCPending(ck.Value)
	if !ok {
		badState("bad_state")
		return
	}
	if st := q.Get("state"); st == "" || subtle.ConstantTimeCompare([]byte(st), []byte(p.state)) != 1 {
		badState("state_mismatch")
		return
	}
	taken, err := a.oidc.requests.Take(ctx, t.ID, oidcRequestID(ck.Value))
	switch {
	case err != nil:
		unavailable("request_store", err)
		return
	case !taken: // replayed, expired, tampered, or another tenant's
		badState("unknown_state")
		return
	}
	// RFC 9207: a provider that names itself must be the tenant's (a
	// mix-up with another provider's answer is refused).
	if q.Has("iss") && q.Get("iss") != e.cfg.Issuer {
		refuse(http.StatusUnauthorized, "invalid_issuer", "the answer comes from another identity provider", "failure", "wrong_issuer", "",
			fmt.Errorf("iss %q", clip(q.Get("iss"), 128)))
		return
	}
	if idpErr := q.Get("error"); idpErr != "" {
		refuse(http.StatusUnauthorized, "idp_error", "the identity provider refused the sign-on", "failure", "idp_error", "",
			fmt.Errorf("provider error %q", clip(idpErr, 64)))
		return
	}
	code := q.Get("code")
	if code == "" {
		badState("missing_code")
		return
	}
	ep, err := e.endpoints(ctx)
	if err != nil {
		unavailable("provider_unavailable", err)
		return
	}
	xctx, cancel := context.WithTimeout(context.WithValue(ctx, oauth2.HTTPClient, e.client), e.cfg.Timeout)
	defer cancel()
	tok, err := e.oauth2(ep).Exchange(xctx, code, oauth2.VerifierOption(p.verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 {
			refuse(http.StatusUnauthorized, "invalid_grant", "the sign-on code was refused by the identity provider", "failure", "code_refused", "",
				fmt.Errorf("token endpoint: %d %q", re.Response.StatusCode, clip(re.ErrorCode, 64)))
			return
		}
		unavailable("token_endpoint", tokenEndpointError(err))
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		refuse(http.StatusUnauthorized, "invalid_id_token", "the identity provider sent no ID token", "failure", "no_id_token", "", nil)
		return
	}
	id, err := e.verify(ctx, t.ID, raw, p.nonce)
	if err != nil {
		var ae *envoyauth.AuthError
		if errors.As(err, &ae) {
			refuse(http.StatusUnauthorized, "invalid_id_token", "the ID token is not valid", "failure", string(ae.Reason), "", err)
			return
		}
		unavailable("provider_keys", err)
		return
	}
	tokens, err := a.sessions.Issue(ctx, id)
	if errors.Is(err, session.ErrTooManySessions) {
		refuse(http.StatusConflict, "too_many_sessions", "the concurrent-session limit is reached; log out elsewhere first", "refused", "session_limit", id.Subject, nil)
		return
	}
	if err != nil {
		a.log.Error("session issue failed", "tenant", t.ID, "user", id.Subject, "err", err)
		authError(w, http.StatusServiceUnavailable, "unavailable", "login is unavailable")
		return
	}
	a.logins.WithLabelValues("oidc", "success", "").Inc()
	a.log.Info("login attempt", "method", "oidc", "tenant", t.ID, "user", id.Subject, "addr", addr, "result", "success",
		"session", tokens.SessionID, "idp", e.cfg.Issuer)
	a.setSessionCookies(w, tokens)
	if len(raw) <= maxIDTokenCookie {
		a.oidcCookie(w, CookieOIDCIDToken, raw, int(tokens.RefreshExpiresAt.Sub(a.now()).Seconds()))
	}
	http.Redirect(w, r, p.returnTo, http.StatusSeeOther)
}

// tokenEndpointError is err without the request (oauth2's errors may
// quote the response body, which could hold tokens): its type and, for a
// RetrieveError, the status and error code only.
func tokenEndpointError(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		return fmt.Errorf("token endpoint: %d %q", re.Response.StatusCode, clip(re.ErrorCode, 64))
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("token endpoint: %s: %v", ue.Op, ue.Err)
	}
	return errors.New("token endpoint: unusable answer")
}

// clip bounds a provider-sent string quoted in a log line.
func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// verify checks an ID token of tenant for this login: the signature
// (allowed algorithms only: never none or HMAC), iss, aud holding our
// client id, exp/nbf/iat within clock_skew, the tenant claim (as jwt
// checks them), then azp (our client id when present; required with
// several audiences) and the nonce of this browser's login. It maps the
// claims to the session's identity.
func (e *oidcEntry) verify(ctx context.Context, tenant, raw, nonce string) (session.Identity, error) {
	vid, err := e.idv.Verify(ctx, raw)
	if err != nil {
		return session.Identity{}, err
	}
	parts := strings.Split(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	var c map[string]any
	if err != nil || json.Unmarshal(b, &c) != nil {
		return session.Identity{}, &envoyauth.AuthError{Reason: envoyauth.ReasonMalformed, Detail: "id token claims"}
	}
	got, _ := c["nonce"].(string)
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(nonce)) != 1 {
		return session.Identity{}, &envoyauth.AuthError{Reason: reasonWrongNonce, Detail: "the ID token's nonce is not this login's"}
	}
	azp, hasAZP := c["azp"].(string)
	if auds, _ := c["aud"].([]any); len(auds) > 1 && !hasAZP {
		return session.Identity{}, &envoyauth.AuthError{Reason: reasonWrongAZP, Detail: "several audiences and no azp"}
	}
	if _, present := c["azp"]; present && azp != e.cfg.ClientID {
		return session.Identity{}, &envoyauth.AuthError{Reason: reasonWrongAZP, Detail: fmt.Sprintf("azp %q", clip(azp, 64))}
	}
	groups := jwtauth.StringList(c[e.cfg.GroupsClaim])
	roles := slices.Clone(vid.Roles)
	for _, g := range groups {
		if r := e.cfg.GroupRoles[g]; r != "" && !slices.Contains(roles, r) {
			roles = append(roles, r)
		}
	}
	attrs := map[string]string{}
	for name, claim := range e.cfg.Attributes {
		if s, ok := c[claim].(string); ok && s != "" {
			attrs[name] = s
		}
	}
	amr := jwtauth.StringList(c["amr"])
	if len(amr) == 0 {
		amr = []string{"oidc"}
	}
	return session.Identity{Subject: vid.Subject, Tenant: tenant, Roles: roles, Groups: groups, Attributes: attrs, Method: "oidc", AMR: amr}, nil
}

// oidcLogout ends the session (POST /auth/oidc/logout, from the tenant's
// own pages when by cookie) and sends the browser to the provider's
// end_session_endpoint with id_token_hint, client_id and
// post_logout_redirect_uri (RP-initiated logout); without one, to
// post_logout_redirect_url or "/".
func (a *Service) oidcLogout(w http.ResponseWriter, r *http.Request) {
	t, e, ok := a.oidcTenant(w, r)
	if !ok {
		return
	}
	token, ok := a.requestToken(w, r, t)
	if !ok {
		return
	}
	if token != "" {
		who := "unknown"
		if id, ours, verr := a.VerifySession(r.Context(), token, t.ID); ours && verr == nil && id != nil {
			who = id.Subject + "@" + t.ID
		}
		err := a.sessions.LogoutFor(r.Context(), token, t.ID)
		if errors.Is(err, session.ErrWrongTenant) {
			a.logins.WithLabelValues("logout", "failure", "wrong_tenant").Inc()
			a.log.Warn("logout refused: the token belongs to another tenant", "tenant", t.ID, "addr", clientAddr(r))
			authError(w, http.StatusUnauthorized, "wrong_tenant", "the session token was not issued for this tenant")
			return
		}
		if err == nil {
			a.audit.Record(r.Context(), audit.Event{Component: "authz", Action: audit.SessionRevoke, Actor: who, Target: "tenant " + t.ID,
				Detail: map[string]any{"reason": "logout", "method": "oidc"}})
		}
	}
	hint := ""
	if c, err := r.Cookie(CookieOIDCIDToken); err == nil {
		hint = c.Value
	}
	a.clearCookies(w) // the ID token's cookie too
	w.Header().Set("Cache-Control", "no-store")
	target := "/"
	if !e.cfg.PostLogoutRedirectURL.IsZero() {
		target = e.cfg.PostLogoutRedirectURL.String()
	}
	if ep, ok := e.keys.Endpoints(); ok && ep.EndSession != "" {
		u, _ := url.Parse(ep.EndSession)
		v := u.Query()
		v.Set("client_id", e.cfg.ClientID)
		if hint != "" {
			v.Set("id_token_hint", hint)
		}
		if !e.cfg.PostLogoutRedirectURL.IsZero() {
			v.Set("post_logout_redirect_uri", e.cfg.PostLogoutRedirectURL.String())
		}
		u.RawQuery = v.Encode()
		target = u.String()
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}
