package extauthz

import (
	"context"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/extauthz/session"
	"github.com/kailash-gw/kailash/internal/wire"
)

func TestIdentityTokenVerifiesWithOurJWKSAndIsReused(t *testing.T) {
	srv := loginTestServer(t)
	id := &envoyauth.Identity{Subject: "alice", Roles: []string{"admin"}, Method: "jwt", Attributes: map[string]any{"department": "eng"}}
	tok, err := srv.auth.minter.Token("acme", id)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := srv.auth.minter.Token("acme", id)
	if again != tok {
		t.Fatal("the same identity was signed twice within the token's lifetime")
	}
	other, _ := srv.auth.minter.Token("globex", id)
	if other == tok {
		t.Fatal("another tenant got the same identity token")
	}
	set, _ := srv.auth.ring.Keys(context.Background())
	parsed, err := jwt.ParseString(tok, jwt.WithKeySet(set), jwt.WithAudience("kailash-runner"), jwt.WithClock(jwt.ClockFunc(fixedClock)))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := parsed.Get("tenant"); v != "acme" || parsed.Subject() != "alice" {
		t.Fatalf("claims: %v", parsed.PrivateClaims())
	}
	if err := srv.auth.ring.Rotate(); err != nil {
		t.Fatal(err)
	}
	if rotated, _ := srv.auth.minter.Token("acme", id); rotated == tok {
		t.Fatal("a key rotation did not mint a new token")
	}
}

func TestSessionTokensOnTheCheckPath(t *testing.T) {
	srv := loginTestServer(t)
	ctx := context.Background()
	tok, err := srv.auth.sessions.Issue(ctx, session.Identity{Subject: "bob", Tenant: "acme", Roles: []string{"business_user"}, Method: "ldap"})
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
				h["sec-fetch-site"] = "same-origin" // a cookie POST comes from the tenant's pages (csrf.go)
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
	if err := srv.auth.sessions.Logout(ctx, tok.AccessToken); err != nil {
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
