package extauthz

import (
	"context"
	"strings"
	"testing"

	"github.com/kailash-gw/kailash/extauthz/session"
	"github.com/kailash-gw/kailash/internal/wire"
)

func TestSessionTokensOnTheCheckPath(t *testing.T) {
	srv := loginTestServer(t)
	ctx := context.Background()
	tok, err := srv.auth.Sessions().Issue(ctx, session.Identity{Subject: "bob", Tenant: "acme", Roles: []string{"business_user"}, Method: "ldap"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, tenant, bearer, cookie string
		want                         int // 200 or the denied HTTP status
	}{
		{"bearer", "acme", tok.AccessToken, "", 200},
		{"cookie", "acme", "", "theme=dark; kailash_session=" + tok.AccessToken, 200},
		{"another tenant's route", "globex", tok.AccessToken, "", 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{}
			if tc.cookie != "" {
				h["cookie"] = tc.cookie
				h["sec-fetch-site"] = "same-origin" // a cookie POST comes from the tenant's pages (envoyauth/csrf.go)
			}
			resp, err := srv.Check(ctx, checkReq(tc.tenant, "POST", "/v1/workflows/etl/executions", tc.bearer, h))
			if err != nil {
				t.Fatal(err)
			}
			got := 200
			if d := resp.GetDeniedResponse(); d != nil {
				got = int(d.GetStatus().GetCode())
			}
			if got != tc.want {
				t.Fatalf("got %d, want %d: %v", got, tc.want, resp)
			}
			if got == 200 {
				var user, ident string
				for _, hv := range resp.GetOkResponse().GetHeaders() {
					switch hv.GetHeader().GetKey() {
					case wire.HeaderUser:
						user = hv.GetHeader().GetValue()
					case wire.HeaderIdentity:
						ident = hv.GetHeader().GetValue()
					}
				}
				if user != "bob" || strings.Count(ident, ".") != 2 {
					t.Fatalf("user %q identity %q", user, ident)
				}
			}
		})
	}
	if err := srv.auth.Sessions().Logout(ctx, tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Check(ctx, checkReq("acme", "POST", "/v1/workflows/etl/executions", tok.AccessToken, nil))
	if err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 401 {
		t.Fatalf("after logout: %v %v", resp, err)
	}
	if !strings.Contains(resp.GetDeniedResponse().GetBody(), "revoked") {
		t.Fatalf("the 401 does not say revoked: %s", resp.GetDeniedResponse().GetBody())
	}
}

func loginTestServer(t *testing.T) *Server {
	t.Helper()
	srv, err := New(t.Context(), testConfig(t), Options{Now: fixedClock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}
