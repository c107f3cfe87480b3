package login

import (
	"net/http"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/internal/config"
)

// loginCSRF is the login service's check for its cookie-authenticated
// endpoints (refresh and logout by cookie); it writes the 403 itself.
func (a *Service) loginCSRF(w http.ResponseWriter, r *http.Request, t config.Tenant) bool {
	why := envoyauth.CSRFReason(r.Method, r.Header.Get("Origin"), r.Header.Get("Sec-Fetch-Site"), &t, !a.secure)
	if why == "" {
		return true
	}
	a.log.Info("csrf: cookie-authenticated request refused", "tenant", t.ID, "path", r.URL.Path, "addr", clientAddr(r), "why", why)
	authError(w, http.StatusForbidden, "csrf", why)
	return false
}
