// Package login is the login service: the /auth/* endpoints on the authz
// HTTP port (LDAP login with TOTP, SAML, OIDC, refresh, logout, TOTP enrolment
// and provisioning, the JWKS), our session tokens, and the identity token
// minted for the upstream. The identity providers are its subpackages'
// (ldapauth, samlsp, mfa, lockout, session). The Check server (extauthz)
// uses a Service through VerifySession, IdentityToken, InsecureCookies and
// SessionCookie only.
package login

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/extauthz/jwtauth"
	"github.com/kailash-gw/kailash/extauthz/ldapauth"
	"github.com/kailash-gw/kailash/extauthz/lockout"
	"github.com/kailash-gw/kailash/extauthz/mfa"
	"github.com/kailash-gw/kailash/extauthz/session"
	"github.com/kailash-gw/kailash/internal/audit"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/telemetry"
	"github.com/kailash-gw/kailash/internal/wire"
)

// Cookie names of our sessions.
const (
	CookieSession = "kailash_session"
	CookieRefresh = "kailash_refresh"
)

// Service is the login service: /auth/* on the authz HTTP port (Envoy
// routes /auth/ there without ext_authz), our session tokens on the Check
// path and the identity token for the upstream. Every part is in memory by
// default.
type Service struct {
	log      *slog.Logger
	audit    *audit.Logger   // key rotations, session revocations; nil: none
	accounts ServiceAccounts // POST /auth/token's client credentials; nil: none
	now      func() time.Time
	ring     *session.KeyRing
	sessions *session.Manager
	issuer   string
	guard    *lockout.Guard
	used     mfa.UsedSteps
	minter   *identityMinter
	secure   bool

	tenants atomic.Pointer[authTenants]

	mu   sync.Mutex            // guards ldap and totp
	ldap map[string]*ldapEntry // tenant id → its directory
	totp map[string]*mfa.TOTP  // tenant id → its TOTP (issuer per tenant)

	logins *prometheus.CounterVec

	mfaEvents *prometheus.CounterVec // enrolment events (mfa.go)
	notifier  *mfa.Notifier          // posts them to mfa.notify_url

	saml *samlLogins // SAML service providers and pending requests (saml.go)
	oidc *oidcLogins // OIDC relying parties and pending logins (oidc.go)

	// shared is where the state of logins lives: sessions, counters, TOTP
	// secrets, SAML request and replay IDs (in memory or in Redis).
	shared sharedStores

	// headerKIDs caches the kid of JWT header segments seen on the Check
	// path (a pure function of the segment: tokens of one issuer and key
	// share it), so telling our session tokens from other JWTs does not
	// decode JSON per request. Bounded: cleared past maxHeaderKIDs.
	headerKIDs  sync.Map // header segment → kid ("" when none or invalid)
	headerCount atomic.Int64
}

// maxHeaderKIDs bounds Service.headerKIDs (distinct JWT headers, not tokens).
const maxHeaderKIDs = 4096

type ldapEntry struct {
	cfg  config.LDAP
	auth *ldapauth.Authenticator
}

type authTenants struct {
	byID     map[string]config.Tenant
	byDomain map[string]string
}

// Options are the service's injected dependencies.
type Options struct {
	Logger *slog.Logger     // default: discard
	Now    func() time.Time // clock for sessions, lockout and TOTP (default time.Now)
	// Registerer takes the service's metrics (default: a registry of its own).
	Registerer prometheus.Registerer
	// Audit records signing key rotations and session revocations.
	Audit *audit.Logger
	// ServiceAccounts checks API keys for POST /auth/token (nil: the
	// endpoint refuses every grant).
	ServiceAccounts ServiceAccounts
}

// New builds the login service of cfg: its stores (in memory, or in
// sessions.redis), key ring, session manager and the tenants' directories
// and SAML service providers. Close releases them.
func New(cfg *config.Config, opts Options) (*Service, error) {
	log, now, reg := opts.Logger, opts.Now, opts.Registerer
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := cfg.Sessions
	sh, err := newSharedStores(s, now)
	if err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	ring, err := session.NewKeyRing(session.KeyRingConfig{Algorithm: s.Algorithm, RotateEvery: s.RotateEvery, Now: now, Store: sh.keys})
	if err != nil {
		sh.close()
		return nil, fmt.Errorf("sessions: %w", err)
	}
	mgr, err := session.NewManager(session.Config{
		Issuer: s.Issuer, Audience: []string{s.Audience},
		AccessTTL: s.AccessTTL, RefreshTTL: s.RefreshTTL, IdleTimeout: s.IdleTimeout,
		MaxSessions: s.MaxSessions, OnLimit: map[bool]session.LimitPolicy{true: session.EvictOldest, false: session.RefuseNew}[s.OnLimit == "evict_oldest"],
		RecheckEvery: s.RecheckEvery,
		Now:          now,
	}, ring, sh.sessions)
	if err != nil {
		sh.close()
		return nil, fmt.Errorf("sessions: %w", err)
	}
	a := &Service{
		log: log, audit: opts.Audit, accounts: opts.ServiceAccounts, now: now, ring: ring, sessions: mgr, issuer: s.Issuer,
		shared: sh,
		guard: lockout.New(sh.lockout, lockout.Config{MaxFailures: cfg.Lockout.MaxFailures,
			MaxAddressFailures: cfg.Lockout.MaxAddressFailures, LockFor: cfg.Lockout.LockFor, Now: now}),
		used:   sh.used,
		minter: newIdentityMinter(ring, s.Issuer, s.IdentityAudience, s.IdentityTTL, now),
		secure: !s.InsecureCookies,
		ldap:   map[string]*ldapEntry{},
		totp:   map[string]*mfa.TOTP{},
		saml:   newSAMLLogins(sh.replay, sh.requests),
		oidc:   newOIDCLogins(sh.oidcRequests, log),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kailash_auth_logins_total", Help: "Login attempts by method, result and reason.",
		}, []string{"method", "result", "reason"}),
	}
	a.mfaEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kailash_auth_mfa_enrolment_events_total", Help: "TOTP enrolment events (code_issued, enrolment_started, enrolment_completed) by how (self, code).",
	}, []string{"event", "via"})
	notifyFailed := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kailash_auth_mfa_notify_failed_total", Help: "Enrolment events not delivered to mfa.notify_url (after retries, or dropped).",
	})
	a.notifier = mfa.NewNotifier(mfa.NotifierOptions{Failed: func(ev mfa.Event, err error) {
		notifyFailed.Inc()
		log.Warn("mfa enrolment notification not delivered", "event", ev.Event, "tenant", ev.Tenant, "user", ev.User, "err", err)
	}})
	reg.MustRegister(a.logins, a.mfaEvents, notifyFailed)
	commit, err := a.Prepare(cfg)
	if err != nil {
		a.Close()
		return nil, err
	}
	commit()
	return a, nil
}

// Prepare builds the tenants, directories and SAML SPs of cfg without
// putting them in force; the commit it returns does, and cannot fail. An
// LDAP authenticator dials only on use, so one prepared and dropped holds
// nothing open.
func (a *Service) Prepare(cfg *config.Config) (commit func(), err error) {
	t := &authTenants{byID: map[string]config.Tenant{}, byDomain: map[string]string{}}
	next := map[string]*ldapEntry{}
	sps, err := a.saml.prepare(cfg, a.now)
	if err != nil {
		return nil, err
	}
	rps, err := a.oidc.prepare(cfg, a.now)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	old := a.ldap
	a.mu.Unlock()
	for _, tc := range cfg.Tenants {
		t.byID[tc.ID] = tc
		for _, d := range tc.Domains {
			t.byDomain[strings.ToLower(d)] = tc.ID
		}
		if tc.LDAP == nil {
			continue
		}
		if e := old[tc.ID]; e != nil && reflect.DeepEqual(e.cfg, *tc.LDAP) {
			next[tc.ID] = e
			continue
		}
		lc, err := ldapConfig(cfg, tc.LDAP)
		if err != nil {
			return nil, fmt.Errorf("tenant %q: %w", tc.ID, err)
		}
		la, err := ldapauth.New(lc)
		if err != nil {
			return nil, fmt.Errorf("tenant %q: ldap: %w", tc.ID, err)
		}
		next[tc.ID] = &ldapEntry{cfg: *tc.LDAP, auth: la}
	}
	return func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		for id, e := range a.ldap {
			if next[id] != e {
				go e.auth.Close() // after in-flight logins, which hold their own connections
			}
		}
		a.ldap = next
		a.saml.commit(sps, func(tenant string, err error) {
			a.log.Warn("saml: cannot fetch the IdP metadata; the last good metadata (if any) keeps serving", "tenant", tenant, "err", err)
		})
		a.oidc.commit(rps)
		a.tenants.Store(t)
	}, nil
}

func ldapConfig(c *config.Config, l *config.LDAP) (ldapauth.Config, error) {
	pw, err := l.BindPassword(c)
	if err != nil {
		return ldapauth.Config{}, err
	}
	at := l.Attributes
	return ldapauth.Config{
		URL: l.URL.String(), StartTLS: l.StartTLS, CAFile: c.Path(l.CAFile), ServerName: l.ServerName,
		BindDN: l.BindDN, BindPassword: telemetry.Secret(pw), UserBaseDN: l.UserBaseDN, UserFilter: l.UserFilter,
		Attributes: ldapauth.Attributes{Email: at["email"], GivenName: at["given_name"], FamilyName: at["family_name"],
			Department: at["department"], Title: at["title"], Clearance: at["clearance"], Location: at["location"], Groups: at["groups"]},
		GroupRoles: l.GroupRoles, DialTimeout: l.DialTimeout, RequestTimeout: l.RequestTimeout, PoolSize: l.PoolSize,
	}, nil
}

// Close stops the service's background work and closes its stores and
// directories.
func (a *Service) Close() {
	a.notifier.Close()
	a.saml.close()
	a.oidc.close()
	a.shared.close()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.ldap {
		e.auth.Close()
	}
	a.ldap = map[string]*ldapEntry{}
}

// Routes mounts the login endpoints.
func (a *Service) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /auth/.well-known/jwks.json", a.jwks)
	mux.HandleFunc("POST /auth/login", a.login)
	mux.HandleFunc("POST /auth/refresh", a.refresh)
	mux.HandleFunc("POST /auth/logout", a.logout)
	mux.HandleFunc("POST /auth/token", a.token)
	mux.HandleFunc("POST /auth/totp/enroll", a.enroll)
	mux.HandleFunc("POST /auth/totp/provision", a.provision)
	a.samlRoutes(mux)
	a.oidcRoutes(mux)
}

func (a *Service) jwks(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(a.ring.JWKS())
}

// tenantOf resolves the tenant: the x-kailash-tenant header Envoy sets on
// the /auth/ route (overwriting any client value), else the Host.
func (a *Service) tenantOf(r *http.Request) (config.Tenant, bool) {
	ts := a.tenants.Load()
	id := r.Header.Get(wire.HeaderTenant)
	if id == "" {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		id = ts.byDomain[strings.ToLower(host)]
	}
	t, ok := ts.byID[id]
	return t, ok
}

// clientAddr is the caller's address: the last X-Forwarded-For hop (Envoy
// appends the peer it saw) or the peer itself.
func clientAddr(r *http.Request) string {
	if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
		parts := strings.Split(xff, ",")
		return strings.TrimSpace(parts[len(parts)-1])
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
	TOTP     string `json:"totp"`
	// EnrolmentCode is an admin-issued one-time code (enrolment only).
	EnrolmentCode string `json:"enrolment_code"`
	// RecoveryCode stands in for TOTP once (login only).
	RecoveryCode string `json:"recovery_code"`
}

func readLogin(r *http.Request) (loginRequest, error) {
	var in loginRequest
	r.Body = http.MaxBytesReader(nil, r.Body, 16<<10)
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			return in, fmt.Errorf("body: %v", err)
		}
		return in, nil
	}
	if err := r.ParseForm(); err != nil {
		return in, fmt.Errorf("form: %v", err)
	}
	in.Username, in.Password, in.TOTP = r.PostForm.Get("username"), r.PostForm.Get("password"), r.PostForm.Get("totp")
	in.EnrolmentCode, in.RecoveryCode = r.PostForm.Get("enrolment_code"), r.PostForm.Get("recovery_code")
	return in, nil
}

func authError(w http.ResponseWriter, code int, kind, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": kind, "message": msg})
}

// authenticate runs the password part of a login: lockout, directory
// lookup and bind, failure counting. It writes the error response itself.
//
// The per-user lockout is the account's, not the typed spelling's: the
// directory binds ALICE, ａｌｉｃｅ and alİce as alice, so the username is
// resolved to its entry first (a search, no password) and counted by
// tenant + DN; a name no entry answers to is counted by its NFKC case fold.
// Both are checked before the password is bound, so a locked account is no
// password oracle, and both cost one search and, unless locked, one bind,
// so neither the answer nor its timing tells whether the user exists. A
// locked address is refused before the directory is asked at all.
func (a *Service) authenticate(w http.ResponseWriter, r *http.Request, t config.Tenant, in loginRequest) (*ldapauth.Identity, bool) {
	ctx, addr := r.Context(), clientAddr(r)
	account := ""
	audit := func(result, reason string, err error) {
		a.logins.WithLabelValues("ldap", result, reason).Inc()
		a.log.Info("login attempt", "tenant", t.ID, "user", in.Username, "account", account, "addr", addr, "result", result, "reason", reason, "err", err)
	}
	a.mu.Lock()
	entry := a.ldap[t.ID]
	a.mu.Unlock()
	if entry == nil {
		authError(w, http.StatusNotFound, "login_not_configured", "this tenant has no directory login")
		return nil, false
	}
	locked := func(err error) bool {
		if err == nil {
			return false
		}
		var le *lockout.LockedError
		if errors.As(err, &le) {
			audit("locked", le.Scope, nil)
			w.Header().Set("Retry-After", fmt.Sprint(int(time.Until(le.Until).Seconds())+1))
			authError(w, http.StatusTooManyRequests, "locked", "too many failed attempts; try again later")
			return true
		}
		audit("error", "lockout_store", err)
		authError(w, http.StatusServiceUnavailable, "unavailable", "login is unavailable")
		return true
	}
	if locked(a.guard.Check(ctx, "", addr)) {
		return nil, false
	}
	failed := func(err error, user string) {
		audit("failure", ldapauth.Reason(err), nil)
		_ = a.guard.Failure(ctx, user, addr)
		authError(w, http.StatusUnauthorized, "invalid_credentials", "invalid username or password")
	}
	unavailable := func(err error) {
		audit("error", ldapauth.Reason(err), err)
		authError(w, http.StatusServiceUnavailable, "directory_unavailable", "the directory cannot be reached; try again later")
	}
	acct, err := entry.auth.Lookup(ctx, in.Username)
	switch {
	case errors.Is(err, ldapauth.ErrInvalidCredentials): // a name that cannot be valid, or ambiguous
		user := lockout.UserKey(t.ID, in.Username)
		if !locked(a.guard.Check(ctx, user, "")) {
			failed(err, user)
		}
		return nil, false
	case err != nil:
		unavailable(err)
		return nil, false
	}
	user := lockoutUser(t, acct, in.Username)
	account = acct.DN
	if locked(a.guard.Check(ctx, user, "")) {
		return nil, false
	}
	id, err := entry.auth.Verify(ctx, acct, in.Password)
	switch {
	case errors.Is(err, ldapauth.ErrInvalidCredentials):
		failed(err, user)
		return nil, false
	case err != nil:
		unavailable(err)
		return nil, false
	}
	return id, true
}

// lockoutUser is the per-user lockout key of a login: the tenant and the
// account's directory entry, or, when no entry answers to the name, the
// name's NFKC case fold.
func lockoutUser(t config.Tenant, acct *ldapauth.Account, typed string) string {
	if acct.Found() {
		return lockout.AccountKey(t.ID, acct.DN)
	}
	return lockout.UserKey(t.ID, typed)
}

// passwordStep is the first step of /auth/login and /auth/totp/enroll: the
// tenant of the host, the username and password read, and the password
// checked against the directory (lockout included). When ok is false the
// answer has been written.
func (a *Service) passwordStep(w http.ResponseWriter, r *http.Request) (config.Tenant, loginRequest, *ldapauth.Identity, bool) {
	t, ok := a.tenantOf(r)
	if !ok {
		authError(w, http.StatusNotFound, "unknown_tenant", "no tenant serves this host")
		return t, loginRequest{}, nil, false
	}
	in, err := readLogin(r)
	if err != nil || in.Username == "" || in.Password == "" {
		authError(w, http.StatusBadRequest, "bad_request", "username and password are required")
		return t, in, nil, false
	}
	id, ok := a.authenticate(w, r, t, in)
	return t, in, id, ok
}

func (a *Service) login(w http.ResponseWriter, r *http.Request) {
	t, in, id, ok := a.passwordStep(w, r)
	if !ok {
		return
	}
	ctx, addr := r.Context(), clientAddr(r)
	amr := []string{"pwd"}
	req := mfa.Requirement{All: t.MFA.Required, Roles: t.MFA.Roles}
	var recovery []string // issued by an enrolment this login completed: shown once
	if req.Applies(id.Roles) {
		var ok bool
		if ok, recovery = a.verifyTOTP(w, r, t, in, id, addr); !ok {
			return
		}
		amr = append(amr, "otp")
	}
	_ = a.guard.Success(ctx, lockout.AccountKey(t.ID, id.DN))
	attrs := id.Attributes()
	tokens, err := a.sessions.Issue(ctx, session.Identity{Subject: id.Username, Tenant: t.ID, Roles: id.Roles,
		Groups: id.Groups, Attributes: attrs, Method: "ldap", AMR: amr})
	if errors.Is(err, session.ErrTooManySessions) {
		a.logins.WithLabelValues("ldap", "refused", "session_limit").Inc()
		authError(w, http.StatusConflict, "too_many_sessions", "the concurrent-session limit is reached; log out elsewhere first")
		return
	}
	if err != nil {
		a.log.Error("session issue failed", "tenant", t.ID, "user", in.Username, "err", err)
		authError(w, http.StatusServiceUnavailable, "unavailable", "login is unavailable")
		return
	}
	a.logins.WithLabelValues("ldap", "success", "").Inc()
	a.log.Info("login attempt", "tenant", t.ID, "user", in.Username, "subject", id.Username, "addr", addr, "result", "success", "session", tokens.SessionID)
	a.writeTokensWith(w, tokens, recovery)
}

// mfaUser keys a user's TOTP state (secrets, used steps): the tenant and
// the user's directory entry (its DN, lower-cased), so that every spelling
// of a username the directory matches to that entry (case, Unicode forms)
// shares one enrolment and cannot start a second.
func mfaUser(t config.Tenant, id *ldapauth.Identity) string {
	name := id.DN
	if name == "" {
		name = id.Username
	}
	return t.ID + "/" + strings.ToLower(name)
}

// verifyTOTP checks the login's TOTP code against the enrolled secret or,
// failing that, the pending enrolment, which its first good code completes.
// It writes the error response itself.
//
// A recovery code (in.RecoveryCode, with no TOTP code) stands in for the
// TOTP code once. When the login completes an enrolment, the user's new
// recovery codes are returned (and replace any earlier ones).
func (a *Service) verifyTOTP(w http.ResponseWriter, r *http.Request, t config.Tenant, in loginRequest, id *ldapauth.Identity, addr string) (bool, []string) {
	ctx, user := r.Context(), mfaUser(t, id)
	unavailable := func(err error) (bool, []string) {
		a.logins.WithLabelValues("ldap", "error", "mfa_store").Inc()
		a.log.Error("login attempt", "tenant", t.ID, "user", in.Username, "addr", addr, "result", "error", "reason", "mfa_store", "err", err)
		authError(w, http.StatusServiceUnavailable, "unavailable", "login is unavailable")
		return false, nil
	}
	st, err := a.shared.secrets.Load(ctx, user)
	if err != nil {
		return unavailable(err)
	}
	if st.Secret == "" && st.Pending == "" {
		a.logins.WithLabelValues("ldap", "refused", "mfa_not_enrolled").Inc()
		msg := "a second factor is required: enrol at POST /auth/totp/enroll"
		if t.MFA.Enrolment == config.EnrolmentAdmin {
			msg = "a second factor is required: ask an administrator for an enrolment code, then enrol at POST /auth/totp/enroll"
		}
		authError(w, http.StatusForbidden, "mfa_enrollment_required", msg)
		return false, nil
	}
	refuse := func(err error) (bool, []string) {
		a.logins.WithLabelValues("ldap", "failure", "mfa").Inc()
		a.log.Info("login attempt", "tenant", t.ID, "user", in.Username, "addr", addr, "result", "failure", "reason", "mfa", "err", err)
		_ = a.guard.Failure(ctx, lockout.AccountKey(t.ID, id.DN), addr)
		authError(w, http.StatusUnauthorized, "invalid_mfa_code", "the TOTP code is not valid")
		return false, nil
	}
	if in.TOTP == "" && in.RecoveryCode != "" && st.Secret != "" {
		used, err := a.shared.recovery.Use(ctx, user, mfa.RecoveryHash(user, in.RecoveryCode))
		switch {
		case err != nil:
			return unavailable(err)
		case !used:
			return refuse(errors.New("the recovery code is not valid (unknown or used)"))
		}
		left, _ := a.shared.recovery.Remaining(ctx, user)
		a.log.Warn("login with a recovery code", "tenant", t.ID, "user", in.Username, "addr", addr, "recovery_codes_left", left)
		a.audit.Record(ctx, audit.Event{Component: "authz", Action: audit.RecoveryCodeUse, Actor: id.Username + "@" + t.ID,
			Target: "tenant " + t.ID, Detail: map[string]any{"recovery_codes_left": left, "client_addr": addr}})
		return true, nil
	}
	if in.TOTP == "" {
		authError(w, http.StatusUnauthorized, "mfa_required", "a TOTP code (or a recovery code) is required")
		return false, nil
	}
	totp, err := a.totpFor(t)
	if err != nil {
		return unavailable(err)
	}
	err, pending := mfa.ErrInvalidCode, false
	if st.Secret != "" {
		err = totp.Verify(ctx, user, st.Secret, in.TOTP)
	}
	if errors.Is(err, mfa.ErrInvalidCode) && st.Pending != "" {
		err, pending = totp.Verify(ctx, user, st.Pending, in.TOTP), true
	}
	switch {
	case errors.Is(err, mfa.ErrInvalidCode), errors.Is(err, mfa.ErrCodeReused):
		return refuse(err)
	case err != nil:
		return unavailable(err) // the used-steps store
	case !pending:
		return true, nil
	}
	ok, err := a.shared.secrets.Confirm(ctx, user, st)
	switch {
	case err != nil:
		return unavailable(err)
	case !ok: // completed or replaced by another request meanwhile
		return refuse(errors.New("the pending enrolment changed meanwhile"))
	}
	a.emitEnrolment(t, mfa.Event{Event: mfa.EventEnrolmentCompleted, User: in.Username, Account: id.DN, Addr: addr})
	codes, hashes, err := mfa.NewRecoveryCodes(user)
	if err == nil {
		err = a.shared.recovery.Replace(ctx, user, hashes)
	}
	if err != nil {
		// The enrolment stands; the user has no recovery codes until the
		// next enrolment.
		a.log.Error("recovery codes not issued", "tenant", t.ID, "user", in.Username, "err", err)
		return true, nil
	}
	return true, codes
}

func (a *Service) totpFor(t config.Tenant) (*mfa.TOTP, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if tp := a.totp[t.ID]; tp != nil {
		return tp, nil
	}
	issuer := t.MFA.Issuer
	if issuer == "" {
		issuer = "Kailash (" + t.ID + ")"
	}
	tp, err := mfa.New(mfa.Config{Issuer: issuer, Now: a.now}, a.used)
	if err != nil {
		return nil, err
	}
	a.totp[t.ID] = tp
	return tp, nil
}

// enroll starts TOTP enrolment for a user who proves the password: it
// returns the secret and otpauth URI once; the first login with a good
// code completes it. Re-enrolment of an enrolled user needs a code too.
func (a *Service) enroll(w http.ResponseWriter, r *http.Request) {
	t, in, id, ok := a.passwordStep(w, r)
	if !ok {
		return
	}
	user := mfaUser(t, id)
	st, err := a.shared.secrets.Load(r.Context(), user)
	if err != nil {
		a.log.Error("totp enrolment unavailable", "tenant", t.ID, "user", in.Username, "err", err)
		authError(w, http.StatusServiceUnavailable, "unavailable", "enrolment is unavailable")
		return
	}
	via, ok := a.enrolmentAllowed(w, r, t, in, id)
	if !ok {
		return
	}
	// Re-enrolment needs the current code, unless an admin's code stands for it.
	if st.Secret != "" && via == "self" {
		if ok, _ := a.verifyTOTP(w, r, t, in, id, clientAddr(r)); !ok {
			return
		}
	}
	totp, err := a.totpFor(t)
	if err != nil {
		authError(w, http.StatusServiceUnavailable, "unavailable", "enrolment is unavailable")
		return
	}
	e, err := totp.Enroll(id.Username)
	if err == nil {
		err = a.shared.secrets.Begin(r.Context(), user, e.Secret, mfa.DefaultPendingTTL)
	}
	if err != nil {
		a.log.Error("totp enrolment unavailable", "tenant", t.ID, "user", in.Username, "err", err)
		authError(w, http.StatusServiceUnavailable, "unavailable", "enrolment is unavailable")
		return
	}
	a.emitEnrolment(t, mfa.Event{Event: mfa.EventEnrolmentStarted, User: in.Username, Account: id.DN, Via: via, Addr: clientAddr(r)})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]string{"otpauth_uri": e.URI, "secret": e.Secret})
}

func (a *Service) writeTokens(w http.ResponseWriter, t *session.Tokens) { a.writeTokensWith(w, t, nil) }

// writeTokensWith is writeTokens with the recovery codes an enrolment just
// issued (shown this once; only their hashes are kept).
func (a *Service) writeTokensWith(w http.ResponseWriter, t *session.Tokens, recovery []string) {
	now := a.now()
	a.setSessionCookies(w, t)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	out := map[string]any{
		"token_type": "Bearer", "access_token": t.AccessToken, "expires_in": int(t.AccessExpiresAt.Sub(now).Seconds()),
		"refresh_token": t.RefreshToken, "refresh_expires_in": int(t.RefreshExpiresAt.Sub(now).Seconds()),
	}
	if len(recovery) > 0 {
		out["recovery_codes"] = recovery
	}
	_ = json.NewEncoder(w).Encode(out)
}

// setSessionCookies sets the session and refresh cookies of t.
func (a *Service) setSessionCookies(w http.ResponseWriter, t *session.Tokens) {
	http.SetCookie(w, &http.Cookie{Name: CookieSession, Value: t.AccessToken, Path: "/", Expires: t.AccessExpiresAt,
		HttpOnly: true, Secure: a.secure, SameSite: http.SameSiteLaxMode})
	http.SetCookie(w, &http.Cookie{Name: CookieRefresh, Value: t.RefreshToken, Path: wire.AuthPrefix, Expires: t.RefreshExpiresAt,
		HttpOnly: true, Secure: a.secure, SameSite: http.SameSiteStrictMode})
}

func (a *Service) clearCookies(w http.ResponseWriter) {
	for _, c := range []struct{ name, path string }{{CookieSession, "/"}, {CookieRefresh, wire.AuthPrefix}, {CookieOIDCIDToken, oidcCookiePath}} {
		http.SetCookie(w, &http.Cookie{Name: c.name, Value: "", Path: c.path, MaxAge: -1, HttpOnly: true, Secure: a.secure})
	}
}

// refresh rotates a refresh token of the host's tenant. A token of
// another tenant's session is refused (401 wrong_tenant) before it is
// rotated: it is neither spent nor treated as reused, so the other
// tenant's session lives on. From the cookie, the request must come from
// the tenant's own pages (csrf.go, envoyauth/csrf.go).
func (a *Service) refresh(w http.ResponseWriter, r *http.Request) {
	t, ok := a.tenantOf(r)
	if !ok {
		authError(w, http.StatusNotFound, "unknown_tenant", "no tenant serves this host")
		return
	}
	token := ""
	if c, err := r.Cookie(CookieRefresh); err == nil {
		token = c.Value
	}
	if token != "" && !a.loginCSRF(w, r, t) {
		return
	}
	if token == "" && strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var in struct {
			RefreshToken string `json:"refresh_token"`
		}
		_ = json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10)).Decode(&in)
		token = in.RefreshToken
	}
	if token == "" {
		authError(w, http.StatusBadRequest, "bad_request", "a refresh token is required")
		return
	}
	tokens, err := a.sessions.RefreshFor(r.Context(), token, t.ID)
	if errors.Is(err, session.ErrWrongTenant) {
		a.logins.WithLabelValues("refresh", "failure", "wrong_tenant").Inc()
		a.log.Warn("refresh refused: the token belongs to another tenant", "tenant", t.ID, "addr", clientAddr(r))
		authError(w, http.StatusUnauthorized, "wrong_tenant", "the refresh token was not issued for this tenant")
		return
	}
	if err != nil {
		reason := "invalid"
		if errors.Is(err, session.ErrRefreshReused) {
			reason = "reused"
			a.log.Warn("refresh token reused: session revoked", "tenant", t.ID, "addr", clientAddr(r))
			a.audit.Record(r.Context(), audit.Event{Component: "authz", Action: audit.SessionRevoke, Target: "tenant " + t.ID,
				Detail: map[string]any{"reason": "refresh token reused (a stolen token, or a client that retried)", "client_addr": clientAddr(r)}})
		}
		a.logins.WithLabelValues("refresh", "failure", reason).Inc()
		a.clearCookies(w)
		authError(w, http.StatusUnauthorized, "invalid_refresh_token", "the refresh token is not valid")
		return
	}
	a.logins.WithLabelValues("refresh", "success", "").Inc()
	a.writeTokens(w, tokens)
}

// logout revokes the session of an access token of the host's tenant; a
// token of another tenant is refused (401 wrong_tenant) and its session
// stays. By cookie, the request must come from the tenant's own pages.
func (a *Service) logout(w http.ResponseWriter, r *http.Request) {
	t, ok := a.tenantOf(r)
	if !ok {
		authError(w, http.StatusNotFound, "unknown_tenant", "no tenant serves this host")
		return
	}
	token, ok := a.requestToken(w, r, t)
	if !ok {
		return
	}
	if token == "" {
		a.clearCookies(w)
		authError(w, http.StatusBadRequest, "bad_request", "no session to log out")
		return
	}
	who := "unknown"
	if id, ours, verr := a.VerifySession(r.Context(), token, t.ID); ours && verr == nil && id != nil {
		who = id.Subject + "@" + t.ID
	}
	err := a.sessions.LogoutFor(r.Context(), token, t.ID)
	if err == nil {
		a.audit.Record(r.Context(), audit.Event{Component: "authz", Action: audit.SessionRevoke, Actor: who, Target: "tenant " + t.ID,
			Detail: map[string]any{"reason": "logout"}})
	}
	if errors.Is(err, session.ErrWrongTenant) {
		a.logins.WithLabelValues("logout", "failure", "wrong_tenant").Inc()
		a.log.Warn("logout refused: the token belongs to another tenant", "tenant", t.ID, "addr", clientAddr(r))
		authError(w, http.StatusUnauthorized, "wrong_tenant", "the session token was not issued for this tenant")
		return
	}
	a.clearCookies(w)
	if err != nil {
		authError(w, http.StatusUnauthorized, "invalid_token", "the session token is not valid")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// VerifySession checks one of our session tokens for the Check path. ok is
// false when the token is not ours (another issuer's JWT: the tenant's
// verifier decides); err is an *envoyauth.AuthError when it is ours and
// not valid for tenant.
func (a *Service) VerifySession(ctx context.Context, token, tenant string) (*envoyauth.Identity, bool, error) {
	if !a.isOurs(ctx, token) {
		return nil, false, nil // another issuer's JWT: the tenant's verifier decides
	}
	c, err := a.sessions.Verify(ctx, token)
	if err != nil {
		reason := envoyauth.ReasonBadSignature
		switch {
		case errors.Is(err, session.ErrExpired), errors.Is(err, session.ErrSessionExpired), errors.Is(err, session.ErrIdle):
			reason = envoyauth.ReasonExpired
		case errors.Is(err, session.ErrRevoked):
			reason = "revoked"
		}
		return nil, true, &envoyauth.AuthError{Reason: reason, Detail: fmt.Sprintf("session token: %v", err)}
	}
	if c.Tenant != tenant {
		return nil, true, &envoyauth.AuthError{Reason: envoyauth.ReasonWrongTenant, Detail: fmt.Sprintf("session of tenant %q", c.Tenant)}
	}
	attrs := make(map[string]any, len(c.Attributes))
	for k, v := range c.Attributes {
		attrs[k] = v
	}
	return &envoyauth.Identity{Subject: c.Subject, Tenant: c.Tenant, Issuer: c.Issuer, Roles: c.Roles, Groups: c.Groups,
		Attributes: attrs, Method: c.Method, ExpiresAt: c.ExpiresAt}, true, nil
}

// isOurs reports whether the token names one of our key ring's kids
// (current or retired-but-overlapping). With a shared ring an unknown kid
// makes the ring sync first (at most once a second), so a token signed just
// after another replica rotated is still recognised as ours.
func (a *Service) isOurs(ctx context.Context, token string) bool {
	dot := strings.IndexByte(token, '.')
	if dot < 0 {
		return false
	}
	kid := a.headerKID(token[:dot])
	return kid != "" && a.ring.Knows(ctx, kid)
}

// headerKID is the kid of a JWT header segment ("" when it has none or
// does not decode), cached in a.headerKIDs.
func (a *Service) headerKID(seg string) string {
	if v, ok := a.headerKIDs.Load(seg); ok {
		return v.(string)
	}
	kid := jwtauth.HeaderKID(seg)
	if a.headerCount.Add(1) > maxHeaderKIDs {
		a.headerKIDs.Clear()
		a.headerCount.Store(1)
	}
	a.headerKIDs.Store(seg, kid)
	return kid
}

// SessionCookie returns our session cookie's value from a Cookie header.
func SessionCookie(header string) string {
	if header == "" {
		return ""
	}
	cs, err := http.ParseCookie(header)
	if err != nil {
		return ""
	}
	for _, c := range cs {
		if c.Name == CookieSession {
			return c.Value
		}
	}
	return ""
}

// IdentityToken is the signed identity token (wire.HeaderIdentity) for id
// in tenant, reused while less than half its lifetime has passed.
func (a *Service) IdentityToken(tenant string, id *envoyauth.Identity) (string, error) {
	return a.minter.Token(tenant, id)
}

// VerifyIdentityToken checks an identity token (wire.HeaderIdentity)
// signed by this service's key ring and returns its tenant and subject.
func (a *Service) VerifyIdentityToken(ctx context.Context, token string) (tenant, subject string, err error) {
	return a.minter.Verify(ctx, token)
}

// InsecureCookies reports sessions.insecure_cookies: the cookies are not
// Secure, and plain-http origins of a tenant's domains pass the CSRF check.
func (a *Service) InsecureCookies() bool { return !a.secure }

// Sessions is the session manager (issue, verify, refresh, revoke).
func (a *Service) Sessions() *session.Manager { return a.sessions }

// Run rotates the signing keys (and, with sessions.redis, syncs the shared
// ring) until ctx is cancelled. A shared ring is synced every 10s: that
// bounds how long this replica's JWKS may lack a key another replica
// rotated to (its own Verify syncs on an unknown kid at once).
func (a *Service) Run(ctx context.Context) {
	every := time.Minute
	if a.shared.client != nil {
		every = 10 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		before := a.ring.SignerKID()
		if _, err := a.ring.RotateIfDue(); err != nil {
			a.log.Error("signing key rotation or sync failed; the current key keeps signing", "err", err)
			a.audit.Record(ctx, audit.Event{Component: "authz", Action: audit.KeyRotate, Target: "session signing key",
				Outcome: audit.Error, Error: err.Error(), Detail: map[string]any{"kid": before}})
			continue
		}
		if after := a.ring.SignerKID(); after != before {
			// With sessions.redis the new key may be another replica's,
			// adopted at the sync.
			a.audit.Record(ctx, audit.Event{Component: "authz", Action: audit.KeyRotate, Target: "session signing key",
				Detail: map[string]any{"previous_kid": before, "kid": after, "shared_ring": a.shared.client != nil}})
		}
	}
}
