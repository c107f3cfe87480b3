package extauthz

import (
	"context"
	"strings"
	"testing"

	"github.com/kailash-gw/kailash/extauthz/session"
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
		why := csrfReason(tc.method, tc.origin, tc.site, tc.tenant, tc.allowHTTP)
		if (why == "") != tc.ok {
			t.Errorf("%s origin=%q site=%q http=%v: refused=%q, want ok=%v", tc.method, tc.origin, tc.site, tc.allowHTTP, why, tc.ok)
		}
	}
}

// On the Check path: a cookie-authenticated unsafe request from a foreign
// origin is refused 403 csrf; the same with a bearer token, or a safe
// method, or from the tenant's own origin, is not.
func TestCheckCookieCSRF(t *testing.T) {
	srv := loginTestServer(t)
	ctx := context.Background()
	tok, err := srv.auth.sessions.Issue(ctx, session.Identity{Subject: "bob", Tenant: "acme", Roles: []string{"business_user"}, Method: "ldap"})
	if err != nil {
		t.Fatal(err)
	}
	c := "kailash_session=" + tok.AccessToken
	for _, tc := range []struct {
		name, method, bearer string
		h                    map[string]string
		want                 int
	}{
		{"cookie, foreign origin", "POST", "", map[string]string{"cookie": c, "origin": "https://evil.example"}, 403},
		{"cookie, no headers", "DELETE", "", map[string]string{"cookie": c}, 403},
		{"cookie, cross-site", "PUT", "", map[string]string{"cookie": c, "sec-fetch-site": "cross-site"}, 403},
		{"cookie, sibling tenant", "POST", "", map[string]string{"cookie": c, "origin": "https://globex.localhost"}, 403},
		{"cookie, own origin", "POST", "", map[string]string{"cookie": c, "origin": "https://acme.localhost"}, 200},
		{"bearer, foreign origin", "POST", tok.AccessToken, map[string]string{"cookie": c, "origin": "https://evil.example"}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := srv.Check(ctx, checkReq("acme", tc.method, "/v1/workflows/etl/executions", tc.bearer, tc.h))
			if err != nil {
				t.Fatal(err)
			}
			got := 200
			if d := resp.GetDeniedResponse(); d != nil {
				got = int(d.GetStatus().GetCode())
				if got == 403 && tc.want == 403 && !strings.Contains(d.GetBody(), `"error":"csrf"`) {
					t.Fatalf("403 body: %s", d.GetBody())
				}
			}
			if got != tc.want {
				t.Fatalf("got %d, want %d: %v", got, tc.want, resp)
			}
		})
	}
}
