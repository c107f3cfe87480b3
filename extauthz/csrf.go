package extauthz

import (
	"net/http"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/internal/config"
)

// cookieCSRF is the Check path's hook: for a request whose identity came
// from our session cookie (no bearer token), the 403 that refuses it, or
// nil when it passes (or is not cookie-authenticated).
func (s *Server) cookieCSRF(ts *tenantState, method string, headers map[string]string, decisionID string) *authv3.CheckResponse {
	if envoyauth.Bearer(headers["authorization"]) != "" || sessionCookie(headers["cookie"]) == "" {
		return nil
	}
	allowHTTP := s.auth != nil && !s.auth.secure
	why := envoyauth.CSRFReason(method, headers["origin"], headers["sec-fetch-site"], &ts.cfg, allowHTTP)
	if why == "" {
		return nil
	}
	s.log.Info("csrf: cookie-authenticated request refused", "tenant", ts.cfg.ID, "decision_id", decisionID, "method", method, "why", why)
	return envoyauth.CSRFDenied(why, decisionID)
}

// loginCSRF is the login service's check for its cookie-authenticated
// endpoints (refresh and logout by cookie); it writes the 403 itself.
func (a *auth) loginCSRF(w http.ResponseWriter, r *http.Request, t config.Tenant) bool {
	why := envoyauth.CSRFReason(r.Method, r.Header.Get("Origin"), r.Header.Get("Sec-Fetch-Site"), &t, !a.secure)
	if why == "" {
		return true
	}
	a.log.Info("csrf: cookie-authenticated request refused", "tenant", t.ID, "path", r.URL.Path, "addr", clientAddr(r), "why", why)
	authError(w, http.StatusForbidden, "csrf", why)
	return false
}
