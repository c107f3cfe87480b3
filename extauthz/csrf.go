package extauthz

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/wire"
)

// CSRF defence for requests authenticated by our session cookie. The
// cookie is SameSite=Lax, which stops cross-site POSTs in current
// browsers only, and not from a sibling subdomain (same site, another
// tenant). So an unsafe request (anything but GET, HEAD, OPTIONS, TRACE)
// whose identity comes from the cookie must also show it was sent by one
// of the tenant's own pages:
//
//   - with an Origin header, that origin must be one of the tenant's
//     domains (https, or http with sessions.insecure_cookies; any port
//     unless the domain names one), one of login.allowed_origins, or one
//     of cors.allow_origins when cors.allow_credentials is set;
//   - without one, Sec-Fetch-Site must be same-origin, same-site or none
//     (browsers send Origin on every unsafe request, so this is a
//     fallback for odd privacy settings);
//   - with neither header, the request is refused: every browser since
//     2020 sends one of them, and a non-browser client has no reason to
//     use the cookie (it sends the token as a bearer).
//
// A request that carries an Authorization bearer token is not affected: a
// browser never adds one by itself.

// csrfReason is why a cookie-authenticated request is refused ("" when it
// is accepted).
func csrfReason(method, origin, fetchSite string, t *config.Tenant, allowHTTP bool) string {
	switch strings.ToUpper(method) {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return ""
	}
	if origin != "" {
		if originAllowed(origin, t, allowHTTP) {
			return ""
		}
		return "the Origin " + quoteShort(origin) + " is not one of the tenant's origins"
	}
	switch strings.ToLower(strings.TrimSpace(fetchSite)) {
	case "same-origin", "same-site", "none":
		return ""
	case "":
		return "a cookie-authenticated " + strings.ToUpper(method) + " needs an Origin or Sec-Fetch-Site header (or send the token as a bearer)"
	}
	return "Sec-Fetch-Site " + quoteShort(fetchSite) + " is not same-origin or same-site"
}

// originAllowed reports whether origin (an Origin header) is one of t's.
func originAllowed(origin string, t *config.Tenant, allowHTTP bool) bool {
	origin = strings.TrimSpace(origin)
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
		return false // includes "null" (opaque origins: sandboxes, privacy redirects)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "https" && scheme != "http" {
		return false
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[scheme]
	}
	norm := scheme + "://" + host + ":" + port
	for _, list := range [][]string{t.Login.AllowedOrigins, credentialedCORS(t)} {
		for _, o := range list {
			if normOrigin(o) == norm {
				return true
			}
		}
	}
	if scheme == "http" && !allowHTTP {
		return false
	}
	for _, d := range t.Domains {
		dh, dp, hasPort := strings.Cut(strings.ToLower(d), ":")
		if hasPort && dp != "*" && dp != port {
			continue
		}
		if suffix, ok := strings.CutPrefix(dh, "*"); ok {
			if len(host) > len(suffix) && strings.HasSuffix(host, suffix) {
				return true
			}
			continue
		}
		if dh == host {
			return true
		}
	}
	return false
}

// credentialedCORS are the CORS origins the tenant lets send credentials.
func credentialedCORS(t *config.Tenant) []string {
	if !t.CORS.AllowCredentials {
		return nil
	}
	return t.CORS.AllowOrigins // never "*" with credentials (config validation)
}

// normOrigin is scheme://host:port, lower case, with the default port.
func normOrigin(o string) string {
	u, err := url.Parse(strings.TrimSpace(o))
	if err != nil || u.Host == "" || strings.Contains(o, "*") {
		return "\x00" // matches nothing
	}
	scheme, port := strings.ToLower(u.Scheme), u.Port()
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[scheme]
	}
	return scheme + "://" + strings.ToLower(u.Hostname()) + ":" + port
}

// quoteShort quotes a client value for a message, cut to 100 bytes.
func quoteShort(s string) string {
	if len(s) > 100 {
		s = s[:100] + "..."
	}
	b, _ := json.Marshal(s)
	return string(b)
}

// cookieCSRF is the Check path's hook: for a request whose identity came
// from our session cookie (no bearer token), the 403 that refuses it, or
// nil when it passes (or is not cookie-authenticated).
func (s *Server) cookieCSRF(ts *tenantState, method string, headers map[string]string, decisionID string) *authv3.CheckResponse {
	if bearer(headers["authorization"]) != "" || sessionCookie(headers["cookie"]) == "" {
		return nil
	}
	allowHTTP := s.auth != nil && !s.auth.secure
	why := csrfReason(method, headers["origin"], headers["sec-fetch-site"], &ts.cfg, allowHTTP)
	if why == "" {
		return nil
	}
	s.log.Info("csrf: cookie-authenticated request refused", "tenant", ts.cfg.ID, "decision_id", decisionID, "method", method, "why", why)
	return csrfDenied(why, decisionID)
}

// csrfDenied is the Check response refusing a request as a possible CSRF.
func csrfDenied(why, decisionID string) *authv3.CheckResponse {
	b, _ := json.Marshal(map[string]string{"error": "csrf", "message": why, "decision_id": decisionID})
	hdr := func(k, v string) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
			Headers: []*corev3.HeaderValueOption{hdr("content-type", "application/json"), hdr(wire.HeaderDecisionID, decisionID)},
			Body:    string(b),
		}},
		DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{wire.MetadataDecisionID: structpb.NewStringValue(decisionID)}},
	}
}

// loginCSRF is the login service's check for its cookie-authenticated
// endpoints (refresh and logout by cookie); it writes the 403 itself.
func (a *auth) loginCSRF(w http.ResponseWriter, r *http.Request, t config.Tenant) bool {
	why := csrfReason(r.Method, r.Header.Get("Origin"), r.Header.Get("Sec-Fetch-Site"), &t, !a.secure)
	if why == "" {
		return true
	}
	a.log.Info("csrf: cookie-authenticated request refused", "tenant", t.ID, "path", r.URL.Path, "addr", clientAddr(r), "why", why)
	authError(w, http.StatusForbidden, "csrf", why)
	return false
}
