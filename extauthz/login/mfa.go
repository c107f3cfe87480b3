package login

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/extauthz/ldapauth"
	"github.com/kailash-gw/kailash/extauthz/mfa"
	"github.com/kailash-gw/kailash/internal/config"
)

// Admin-provisioned TOTP enrolment and enrolment notifications.
//
// POST /auth/totp/provision {"username": "bob"} by a session of the
// tenant (bearer, or cookie with the CSRF check) holding one of the
// tenant's mfa.admin_roles issues a one-time enrolment code for bob (the
// admin hands it over out of band); bob then enrols at POST
// /auth/totp/enroll with password and "enrolment_code". With
// mfa.enrolment: admin, enrolment without a code is refused.
//
// Every enrolment event (code issued, enrolment started, completed) is a
// structured log line ("mfa enrolment event"), a count in
// kailash_auth_mfa_enrolment_events_total{event,via}, and, with
// mfa.notify_url, a JSON POST there (mfa.Event; never a secret or code).

// emitEnrolment logs, counts and (with mfa.notify_url) posts ev.
func (a *Service) emitEnrolment(t config.Tenant, ev mfa.Event) {
	ev.Tenant, ev.Time = t.ID, a.now().UTC()
	a.mfaEvents.WithLabelValues(ev.Event, ev.Via).Inc()
	a.log.Info("mfa enrolment event", "event", ev.Event, "tenant", ev.Tenant, "user", ev.User, "account", ev.Account,
		"via", ev.Via, "by", ev.By, "addr", ev.Addr)
	if !t.MFA.NotifyURL.IsZero() {
		a.notifier.Notify(t.MFA.NotifyURL.String(), ev)
	}
}

// mfaUserKey keys a user's TOTP state by tenant and directory entry.
func mfaUserKey(tenant, dn, username string) string {
	name := dn
	if name == "" {
		name = username
	}
	return tenant + "/" + strings.ToLower(name)
}

// provision issues a one-time enrolment code for a user of the tenant.
func (a *Service) provision(w http.ResponseWriter, r *http.Request) {
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
		authError(w, http.StatusUnauthorized, "unauthenticated", "an administrator's session token is required")
		return
	}
	c, err := a.sessions.Verify(r.Context(), token)
	if err != nil {
		authError(w, http.StatusUnauthorized, "invalid_token", "the session token is not valid")
		return
	}
	if c.Tenant != t.ID {
		authError(w, http.StatusUnauthorized, "wrong_tenant", "the session token was not issued for this tenant")
		return
	}
	if !slices.ContainsFunc(c.Roles, func(r string) bool { return slices.Contains(t.MFA.AdminRoles, r) }) {
		a.log.Warn("totp provisioning refused: not an mfa admin", "tenant", t.ID, "by", c.Subject, "addr", clientAddr(r))
		authError(w, http.StatusForbidden, "forbidden", "issuing enrolment codes needs one of the tenant's mfa.admin_roles")
		return
	}
	var in struct {
		Username string `json:"username"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil || in.Username == "" {
		authError(w, http.StatusBadRequest, "bad_request", "a JSON body with username is required")
		return
	}
	a.mu.Lock()
	entry := a.ldap[t.ID]
	a.mu.Unlock()
	if entry == nil {
		authError(w, http.StatusNotFound, "login_not_configured", "this tenant has no directory login")
		return
	}
	acct, err := entry.auth.Lookup(r.Context(), in.Username)
	switch {
	case errors.Is(err, ldapauth.ErrInvalidCredentials) || (err == nil && !acct.Found()):
		authError(w, http.StatusNotFound, "unknown_user", "no directory entry answers to this username")
		return
	case err != nil:
		authError(w, http.StatusServiceUnavailable, "directory_unavailable", "the directory cannot be reached; try again later")
		return
	}
	code, err := mfa.NewEnrolmentCode()
	if err == nil {
		err = a.shared.codes.Issue(r.Context(), mfaUserKey(t.ID, acct.DN, in.Username), code, mfa.DefaultCodeTTL)
	}
	if err != nil {
		a.log.Error("totp provisioning unavailable", "tenant", t.ID, "err", err)
		authError(w, http.StatusServiceUnavailable, "unavailable", "provisioning is unavailable")
		return
	}
	a.emitEnrolment(t, mfa.Event{Event: mfa.EventCodeIssued, User: in.Username, Account: acct.DN, Via: "code", By: c.Subject, Addr: clientAddr(r)})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{"username": in.Username, "enrolment_code": code,
		"expires_in": int(mfa.DefaultCodeTTL.Seconds())})
}

// enrolmentAllowed decides an enrolment of id by its enrolment code (or
// its absence) under the tenant's mfa.enrolment. via is "code" when a code
// was redeemed (it stands for the current TOTP code on re-enrolment),
// "self" otherwise. It writes the error response itself.
func (a *Service) enrolmentAllowed(w http.ResponseWriter, r *http.Request, t config.Tenant, in loginRequest, id *ldapauth.Identity) (via string, ok bool) {
	if in.EnrolmentCode == "" {
		if t.MFA.Enrolment == config.EnrolmentAdmin {
			a.logins.WithLabelValues("ldap", "refused", "enrolment_code_required").Inc()
			authError(w, http.StatusForbidden, "enrolment_code_required", "this tenant enrols a second factor with a one-time code from an administrator")
			return "", false
		}
		return "self", true
	}
	ok, err := a.shared.codes.Redeem(r.Context(), mfaUser(t, id), in.EnrolmentCode)
	if err != nil {
		a.log.Error("totp enrolment unavailable", "tenant", t.ID, "user", in.Username, "err", err)
		authError(w, http.StatusServiceUnavailable, "unavailable", "enrolment is unavailable")
		return "", false
	}
	if !ok {
		a.logins.WithLabelValues("ldap", "failure", "enrolment_code").Inc()
		_ = a.guard.Failure(r.Context(), "", clientAddr(r))
		authError(w, http.StatusUnauthorized, "invalid_enrolment_code", "the enrolment code is not valid")
		return "", false
	}
	return "code", true
}

// requestToken is the access token of a login-service request: the bearer
// token, else the session cookie — which must pass the CSRF check (on
// refusal the answer is written and ok is false). "" when there is neither.
func (a *Service) requestToken(w http.ResponseWriter, r *http.Request, t config.Tenant) (token string, ok bool) {
	if token = envoyauth.Bearer(r.Header.Get("Authorization")); token != "" {
		return token, true
	}
	if c, err := r.Cookie(CookieSession); err == nil && c.Value != "" {
		if !a.loginCSRF(w, r, t) {
			return "", false
		}
		return c.Value, true
	}
	return "", true
}
