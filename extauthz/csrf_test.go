package extauthz

import (
	"context"
	"strings"
	"testing"

	"github.com/kailash-gw/kailash/extauthz/session"
)

// On the Check path: a cookie-authenticated unsafe request from a foreign
// origin is refused 403 csrf; the same with a bearer token, or a safe
// method, or from the tenant's own origin, is not.
func TestCheckCookieCSRF(t *testing.T) {
	srv := loginTestServer(t)
	ctx := context.Background()
	tok, err := srv.auth.Sessions().Issue(ctx, session.Identity{Subject: "bob", Tenant: "acme", Roles: []string{"business_user"}, Method: "ldap"})
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
