package extauthz

import (
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/extauthz/login"
)

// cookieCSRF is the Check path's hook: for a request whose identity came
// from our session cookie (no bearer token), the 403 that refuses it, or
// nil when it passes (or is not cookie-authenticated).
func (s *Server) cookieCSRF(ts *tenantState, method string, headers map[string]string, decisionID string) *authv3.CheckResponse {
	if envoyauth.Bearer(headers["authorization"]) != "" || login.SessionCookie(headers["cookie"]) == "" {
		return nil
	}
	allowHTTP := s.auth != nil && s.auth.InsecureCookies()
	why := envoyauth.CSRFReason(method, headers["origin"], headers["sec-fetch-site"], &ts.cfg, allowHTTP)
	if why == "" {
		return nil
	}
	s.log.Info("csrf: cookie-authenticated request refused", "tenant", ts.cfg.ID, "decision_id", decisionID, "method", method, "why", why)
	return envoyauth.CSRFDenied(why, decisionID)
}
