package envoyauth

import (
	"encoding/json"
	"net/url"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"

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

// CSRFReason is why a cookie-authenticated request is refused ("" when it
// is accepted).
func CSRFReason(method, origin, fetchSite string, t *config.Tenant, allowHTTP bool) string {
	switch strings.ToUpper(method) {
	case "GET", "HEAD", "OPTIONS", "TRACE": // the safe methods
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

// CSRFDenied is the Check response refusing a request as a possible CSRF.
func CSRFDenied(why, decisionID string) *authv3.CheckResponse {
	b, _ := json.Marshal(map[string]string{"error": "csrf", "message": why, "decision_id": decisionID})
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
			Headers: []*corev3.HeaderValueOption{set("content-type", "application/json"), set(wire.HeaderDecisionID, decisionID)},
			Body:    string(b),
		}},
		DynamicMetadata: idMetadata(decisionID),
	}
}
