package login

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"strings"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/extauthz/session"
)

// ServiceAccounts checks a service account's API key (the extauthz API
// key store) for tenant from client.
type ServiceAccounts func(key, tenant string, client netip.Addr) (*envoyauth.Identity, error)

// token is POST /auth/token: OAuth2's client-credentials grant for service
// accounts (RFC 6749 §4.4). The client authenticates with its API key —
// HTTP Basic or client_id/client_secret in the form, the id and the secret
// of kl_<id>_<secret>, or the whole key as client_secret — and gets our
// session token (no refresh token: the client can ask again).
func (a *Service) token(w http.ResponseWriter, r *http.Request) {
	oauthError := func(code int, kind, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if code == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="kailash"`)
		}
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": kind, "error_description": msg})
	}
	t, ok := a.tenantOf(r)
	if !ok {
		oauthError(http.StatusNotFound, "invalid_request", "no tenant serves this host")
		return
	}
	if a.accounts == nil {
		oauthError(http.StatusBadRequest, "unsupported_grant_type", "no service accounts are configured (authz.api_keys_file)")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		oauthError(http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded")
		return
	}
	if gt := r.PostForm.Get("grant_type"); gt != "client_credentials" {
		oauthError(http.StatusBadRequest, "unsupported_grant_type", "only grant_type=client_credentials is supported")
		return
	}
	id, secret, basic := r.BasicAuth()
	if !basic {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	key := secret
	if !strings.HasPrefix(secret, "kl_") {
		key = "kl_" + id + "_" + secret
	}
	addr := clientAddr(r)
	client, _ := netip.ParseAddr(addr)
	sa, err := a.accounts(key, t.ID, client)
	if err != nil {
		reason := "invalid_client"
		var ae *envoyauth.AuthError
		if errors.As(err, &ae) {
			reason = string(ae.Reason)
		}
		a.logins.WithLabelValues("client_credentials", "failure", reason).Inc()
		a.log.Info("token request", "tenant", t.ID, "client_id", id, "addr", addr, "result", "failure", "reason", reason)
		oauthError(http.StatusUnauthorized, "invalid_client", "the client credentials are not valid ("+reason+")")
		return
	}
	tokens, err := a.sessions.Issue(r.Context(), session.Identity{Subject: sa.Subject, Tenant: t.ID, Roles: sa.Roles, Method: "apikey", AMR: []string{"apikey"}})
	if err != nil {
		a.log.Error("session issue failed", "tenant", t.ID, "client_id", id, "err", err)
		oauthError(http.StatusServiceUnavailable, "temporarily_unavailable", "token issuing is unavailable")
		return
	}
	a.logins.WithLabelValues("client_credentials", "success", "").Inc()
	a.log.Info("token request", "tenant", t.ID, "subject", sa.Subject, "addr", addr, "result", "success", "session", tokens.SessionID)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": tokens.AccessToken, "token_type": "Bearer", "expires_in": int(tokens.AccessExpiresAt.Sub(a.now()).Seconds()),
	})
}
