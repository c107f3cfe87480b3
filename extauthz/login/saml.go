package login

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"sync"
	"time"

	"github.com/kailash-gw/kailash/extauthz/lockout"
	"github.com/kailash-gw/kailash/extauthz/samlsp"
	"github.com/kailash-gw/kailash/extauthz/session"
	"github.com/kailash-gw/kailash/internal/config"
)

// CookieSAMLRequest carries the id of the browser's pending AuthnRequest
// from GET /auth/saml/login to POST /auth/saml/acs. The IdP posts to the
// ACS from its own site, so the cookie is SameSite=None (and so Secure).
const CookieSAMLRequest = "kailash_saml_req"

const (
	// samlRequestTTL is how long an AuthnRequest may wait for its response
	// (the user is logging in at the IdP, perhaps with MFA).
	samlRequestTTL = 10 * time.Minute
	// maxSAMLRequestID bounds the request id read from the cookie (ours
	// are 43 bytes).
	maxSAMLRequestID = 128
	// samlMetadataRefresh is how often IdP metadata from a URL is fetched
	// again (a failure keeps the last good metadata).
	samlMetadataRefresh = time.Hour
)

// samlLogins holds the tenants' service providers. One replay store and
// one store of pending AuthnRequests serve every SP, across reloads; both
// are in Redis with sessions.redis, so that the ACS post of a login may
// reach another replica than the one that started it.
type samlLogins struct {
	ctx      context.Context // metadata refresh loops; ends with close
	stop     context.CancelFunc
	replay   samlsp.ReplayStore
	requests samlsp.RequestStore

	mu  sync.Mutex // guards sps
	sps map[string]*samlEntry
}

type samlEntry struct {
	cfg    samlsp.Config
	stamp  string // sizes and times of its files: a changed file rebuilds the SP
	sp     *samlsp.ServiceProvider
	cancel context.CancelFunc // its metadata refresh loop (URL metadata only)
}

func newSAMLLogins(replay samlsp.ReplayStore, requests samlsp.RequestStore) *samlLogins {
	ctx, stop := context.WithCancel(context.Background())
	return &samlLogins{ctx: ctx, stop: stop, replay: replay, requests: requests, sps: map[string]*samlEntry{}}
}

func samlConfig(c *config.Config, s *config.SAML) samlsp.Config {
	at := s.Attributes
	return samlsp.Config{
		EntityID: s.EntityID, ACSURL: s.ACSURL.String(), MetadataURL: s.MetadataURL.String(),
		KeyFile: c.Path(s.KeyFile), CertFile: c.Path(s.CertFile),
		IDPMetadataFile: c.Path(s.IDPMetadataFile), IDPMetadataURL: s.IDPMetadataURL.String(),
		AllowIDPInitiated: s.AllowIDPInitiated, AllowSHA1: s.AllowSHA1,
		Attributes: samlsp.Attributes{Email: at.Email, DisplayName: at.DisplayName, GivenName: at.GivenName,
			FamilyName: at.FamilyName, Groups: at.Groups, Extra: at.Extra},
		GroupRoles: s.GroupRoles, MetadataTimeout: s.MetadataTimeout, MetadataRetry: s.MetadataRetry,
	}
}

func fileStamp(paths ...string) string {
	var b []byte
	for _, p := range paths {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil {
			b = fmt.Appendf(b, "%s:%d:%d;", p, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return string(b)
}

// prepare builds the SPs of cfg, reusing those whose config and files are
// unchanged. It does no network I/O: IdP metadata from a URL is fetched by
// the refresh loop commit starts.
func (s *samlLogins) prepare(cfg *config.Config, now func() time.Time) (map[string]*samlEntry, error) {
	s.mu.Lock()
	old := s.sps
	s.mu.Unlock()
	next := map[string]*samlEntry{}
	noIO, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range cfg.Tenants {
		if tc.SAML == nil {
			continue
		}
		sc := samlConfig(cfg, tc.SAML)
		stamp := fileStamp(sc.KeyFile, sc.CertFile, sc.IDPMetadataFile)
		if e := old[tc.ID]; e != nil && e.stamp == stamp && reflect.DeepEqual(e.cfg, sc) {
			next[tc.ID] = e
			continue
		}
		sp, err := samlsp.New(noIO, sc, samlsp.WithReplayStore(s.replay), samlsp.WithClock(now))
		if err != nil {
			return nil, fmt.Errorf("tenant %q: %w", tc.ID, err)
		}
		next[tc.ID] = &samlEntry{cfg: sc, stamp: stamp, sp: sp}
	}
	return next, nil
}

// commit puts next in force: it starts the metadata refresh of new SPs
// and stops that of SPs no longer used.
func (s *samlLogins) commit(next map[string]*samlEntry, onErr func(tenant string, err error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, e := range next {
		if e.cancel != nil || e.cfg.IDPMetadataURL == "" {
			continue
		}
		ctx, cancel := context.WithCancel(s.ctx)
		e.cancel = cancel
		go refreshMetadata(ctx, e.sp, func(err error) { onErr(id, err) })
	}
	for id, e := range s.sps {
		if next[id] != e && e.cancel != nil {
			e.cancel()
		}
	}
	s.sps = next
}

// refreshMetadata fetches the IdP metadata now, then every
// samlMetadataRefresh, retrying failures with a growing delay.
func refreshMetadata(ctx context.Context, sp *samlsp.ServiceProvider, onErr func(error)) {
	backoff := time.Second
	for {
		wait := samlMetadataRefresh
		if err := sp.RefreshMetadata(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			onErr(err)
			wait, backoff = backoff, min(backoff*2, 5*time.Minute)
		} else {
			backoff = time.Second
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (s *samlLogins) close() {
	s.stop()
}

func (s *samlLogins) sp(tenant string) *samlsp.ServiceProvider {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.sps[tenant]; e != nil {
		return e.sp
	}
	return nil
}

// remember records a pending AuthnRequest of tenant, at most max of the
// tenant's at a time (samlsp.ErrTooManyRequests beyond).
func (s *samlLogins) remember(ctx context.Context, id, tenant string, max int, now time.Time) error {
	return s.requests.Remember(ctx, tenant, id, now.Add(samlRequestTTL), max)
}

// consume takes a pending AuthnRequest of tenant (once, on any replica):
// false when it is not one (another tenant's stays pending). An error
// means the store cannot tell.
func (s *samlLogins) consume(ctx context.Context, id, tenant string) (bool, error) {
	if len(id) > maxSAMLRequestID {
		return false, nil
	}
	return s.requests.Take(ctx, tenant, id)
}

// samlStartWindow is the window of login.saml_starts_per_minute.
const samlStartWindow = time.Minute

// samlStartAllowed counts a SAML login start of the client address for
// tenant t and refuses it (429, Retry-After) beyond the tenant's
// login.saml_starts_per_minute, or (503) when the counter cannot be
// reached. It writes the error response itself.
func (a *Service) samlStartAllowed(w http.ResponseWriter, r *http.Request, t config.Tenant) bool {
	limit := t.Login.SAMLStartsPerMinute
	if limit <= 0 {
		limit = config.DefaultSAMLStartsPerMinute
	}
	addr := clientAddr(r)
	n, err := a.shared.starts.Incr(r.Context(), t.ID+"/"+lockout.AddressKey(addr), samlStartWindow)
	if err != nil {
		a.logins.WithLabelValues("saml", "error", "rate_store").Inc()
		a.log.Warn("saml login refused: cannot count login starts", "tenant", t.ID, "err", err)
		authError(w, http.StatusServiceUnavailable, "saml_unavailable", "single sign-on is unavailable; try again later")
		return false
	}
	if n > limit {
		a.logins.WithLabelValues("saml", "refused", "rate_limited").Inc()
		if n == limit+1 { // once per window and address, not per refused request
			a.log.Warn("saml login starts rate-limited", "tenant", t.ID, "addr", addr, "limit_per_minute", limit)
		}
		w.Header().Set("Retry-After", fmt.Sprint(int(samlStartWindow.Seconds())))
		authError(w, http.StatusTooManyRequests, "rate_limited", "too many sign-on attempts from this address; try again later")
		return false
	}
	return true
}

// samlRoutes mounts the SAML endpoints.
func (a *Service) samlRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /auth/saml/metadata", a.samlMetadata)
	mux.HandleFunc("GET /auth/saml/login", a.samlLogin)
	mux.HandleFunc("POST /auth/saml/acs", a.samlACS)
}

// samlTenant resolves the tenant and its SP, or writes the error.
func (a *Service) samlTenant(w http.ResponseWriter, r *http.Request) (config.Tenant, *samlsp.ServiceProvider, bool) {
	t, ok := a.tenantOf(r)
	if !ok {
		authError(w, http.StatusNotFound, "unknown_tenant", "no tenant serves this host")
		return t, nil, false
	}
	sp := a.saml.sp(t.ID)
	if sp == nil {
		authError(w, http.StatusNotFound, "saml_not_configured", "this tenant has no SAML login")
		return t, nil, false
	}
	return t, sp, true
}

func (a *Service) samlMetadata(w http.ResponseWriter, r *http.Request) {
	_, sp, ok := a.samlTenant(w, r)
	if !ok {
		return
	}
	b, err := sp.Metadata()
	if err != nil {
		authError(w, http.StatusInternalServerError, "internal", "cannot render the metadata")
		return
	}
	w.Header().Set("Content-Type", "application/samlmetadata+xml")
	_, _ = w.Write(b)
}

func (a *Service) samlRequestCookie(w http.ResponseWriter, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: CookieSAMLRequest, Value: value, Path: "/auth/saml/", MaxAge: maxAge,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteNoneMode})
}

// samlLogin starts an SP-initiated login: GET /auth/saml/login?return_to=/path.
func (a *Service) samlLogin(w http.ResponseWriter, r *http.Request) {
	t, sp, ok := a.samlTenant(w, r)
	if !ok {
		return
	}
	if !a.samlStartAllowed(w, r, t) {
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
	loc, id, err := sp.LoginRedirect(r.Context(), returnTo)
	switch {
	case errors.Is(err, samlsp.ErrBadRelayState):
		authError(w, http.StatusBadRequest, "bad_return_to", "return_to must be a same-site path")
		return
	case err != nil:
		a.log.Warn("saml login unavailable", "tenant", t.ID, "reason", samlsp.Reason(err), "err", err)
		authError(w, http.StatusServiceUnavailable, "saml_unavailable", "single sign-on is unavailable; try again later")
		return
	}
	err = a.saml.remember(r.Context(), id, t.ID, t.Login.SAMLMaxPending, a.now())
	if errors.Is(err, samlsp.ErrTooManyRequests) {
		a.logins.WithLabelValues("saml", "refused", "too_many_pending").Inc()
		a.log.Warn("saml login refused: the tenant's pending requests are at login.saml_max_pending", "tenant", t.ID, "max", t.Login.SAMLMaxPending)
		w.Header().Set("Retry-After", fmt.Sprint(int(samlRequestTTL.Seconds())))
		authError(w, http.StatusServiceUnavailable, "too_many_pending_logins", "too many sign-ons are in progress for this tenant; try again later")
		return
	}
	if err != nil {
		a.log.Warn("saml login refused: cannot remember the request", "tenant", t.ID, "err", err)
		authError(w, http.StatusServiceUnavailable, "saml_unavailable", "single sign-on is unavailable; try again later")
		return
	}
	a.samlRequestCookie(w, id, int(samlRequestTTL.Seconds()))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, loc, http.StatusFound)
}

// samlACS is the assertion consumer: a valid response ends in our session
// (cookies as after an LDAP login) and a 303 to the RelayState path.
func (a *Service) samlACS(w http.ResponseWriter, r *http.Request) {
	t, sp, ok := a.samlTenant(w, r)
	if !ok {
		return
	}
	ctx, addr := r.Context(), clientAddr(r)
	audit := func(result, reason, user string, err error) {
		a.logins.WithLabelValues("saml", result, reason).Inc()
		var se *samlsp.Error
		if errors.As(err, &se) && se.Err != nil {
			err = se.Err // the cause, never the assertion
		}
		a.log.Info("login attempt", "method", "saml", "tenant", t.ID, "user", user, "addr", addr, "result", result, "reason", reason, "err", err)
	}
	var ids []string
	if c, err := r.Cookie(CookieSAMLRequest); err == nil && c.Value != "" {
		a.samlRequestCookie(w, "", -1)
		ok, err := a.saml.consume(ctx, c.Value, t.ID)
		if err != nil {
			audit("error", "request_store", "", err)
			authError(w, http.StatusServiceUnavailable, "saml_unavailable", "single sign-on is unavailable; try again later")
			return
		}
		if ok {
			ids = []string{c.Value}
		}
	}
	id, err := sp.ParseResponse(ctx, r, ids)
	if err != nil {
		if errors.Is(err, samlsp.ErrUnavailable) {
			audit("error", samlsp.Reason(err), "", err)
			authError(w, http.StatusServiceUnavailable, "saml_unavailable", "single sign-on is unavailable; try again later")
			return
		}
		audit("failure", samlsp.Reason(err), "", err)
		authError(w, http.StatusUnauthorized, "invalid_saml_response", "the SAML response is not valid")
		return
	}
	tokens, err := a.sessions.Issue(ctx, session.Identity{Subject: id.Subject, Tenant: t.ID, Roles: id.Roles,
		Groups: id.Groups, Attributes: id.Attributes(), Method: "saml", AMR: []string{"saml"}})
	if errors.Is(err, session.ErrTooManySessions) {
		audit("refused", "session_limit", id.Subject, nil)
		authError(w, http.StatusConflict, "too_many_sessions", "the concurrent-session limit is reached; log out elsewhere first")
		return
	}
	if err != nil {
		a.log.Error("session issue failed", "tenant", t.ID, "user", id.Subject, "err", err)
		authError(w, http.StatusServiceUnavailable, "unavailable", "login is unavailable")
		return
	}
	a.logins.WithLabelValues("saml", "success", "").Inc()
	a.log.Info("login attempt", "method", "saml", "tenant", t.ID, "user", id.Subject, "addr", addr, "result", "success",
		"session", tokens.SessionID, "idp", id.Issuer)
	a.setSessionCookies(w, tokens)
	target := r.PostForm.Get("RelayState")
	if !samlsp.SafeRelayState(target) {
		target = "/"
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, target, http.StatusSeeOther)
}
