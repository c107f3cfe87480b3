package envoyauth

import (
	"testing"

	"github.com/kailash-gw/kailash/internal/config"
)

func TestCSRFReason(t *testing.T) {
	tn := &config.Tenant{ID: "acme", Domains: []string{"acme.example.com", "*.apps.acme.example", "admin.acme.test:8443"},
		Login: config.Login{AllowedOrigins: []string{"https://portal.partner.example", "http://legacy.partner.example:8080"}},
		CORS:  config.CORS{AllowOrigins: []string{"https://spa.example"}, AllowCredentials: true}}
	noCreds := &config.Tenant{ID: "b", Domains: []string{"b.example"}, CORS: config.CORS{AllowOrigins: []string{"https://spa.example"}}}
	for _, tc := range []struct {
		method, origin, site string
		tenant               *config.Tenant
		allowHTTP, ok        bool
	}{
		{"GET", "", "", tn, false, true}, // safe methods are not checked
		{"HEAD", "https://evil.example", "cross-site", tn, false, true},
		{"OPTIONS", "", "", tn, false, true},
		{"POST", "", "", tn, false, false}, // neither header: refused
		{"post", "", "", tn, false, false},
		{"PROPFIND", "", "", tn, false, false}, // unknown methods are unsafe
		{"POST", "https://acme.example.com", "", tn, false, true},
		{"DELETE", "https://ACME.example.com:8443", "", tn, false, true}, // a domain without port: any port
		{"PUT", "http://acme.example.com", "", tn, false, false},         // plain http only with insecure cookies
		{"PUT", "http://acme.example.com", "", tn, true, true},
		{"PATCH", "https://x.apps.acme.example", "", tn, false, true},
		{"PATCH", "https://apps.acme.example", "", tn, false, false}, // the wildcard needs a label
		{"POST", "https://admin.acme.test:8443", "", tn, false, true},
		{"POST", "https://admin.acme.test", "", tn, false, false}, // the domain names a port
		{"POST", "https://portal.partner.example", "cross-site", tn, false, true},
		{"POST", "https://portal.partner.example:443", "", tn, false, true},
		{"POST", "http://legacy.partner.example:8080", "", tn, false, true},  // configured explicitly
		{"POST", "https://spa.example", "cross-site", tn, false, true},       // CORS with credentials
		{"POST", "https://spa.example", "cross-site", noCreds, false, false}, // CORS without credentials
		{"POST", "https://acme.example.com.evil.example", "", tn, false, false},
		{"POST", "https://evilacme.example.com", "", tn, false, false},
		{"POST", "null", "same-origin", tn, false, false}, // Origin decides when present
		{"POST", "https://evil.example", "same-origin", tn, false, false},
		{"POST", "https://acme.example.com/path", "", tn, false, false},
		{"POST", "javascript://acme.example.com", "", tn, false, false},
		{"POST", "", "same-origin", tn, false, true},
		{"POST", "", "same-site", tn, false, true},
		{"POST", "", "none", tn, false, true},
		{"POST", "", "cross-site", tn, false, false},
		{"POST", "", "bogus", tn, false, false},
	} {
		why := CSRFReason(tc.method, tc.origin, tc.site, tc.tenant, tc.allowHTTP)
		if (why == "") != tc.ok {
			t.Errorf("%s origin=%q site=%q http=%v: refused=%q, want ok=%v", tc.method, tc.origin, tc.site, tc.allowHTTP, why, tc.ok)
		}
	}
}
