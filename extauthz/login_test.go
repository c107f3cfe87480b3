package extauthz

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kailash-gw/kailash/extauthz/session"
	"github.com/kailash-gw/kailash/internal/audit"
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

// A logout through POST /auth/logout is a session.revoke audit event naming
// who logged out; the token is not in it.
func TestLogoutIsAudited(t *testing.T) {
	var buf strings.Builder
	aud, err := audit.New(audit.Options{Log: slog.New(slog.NewJSONHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(t.Context(), testConfig(t), Options{Now: fixedClock, Audit: aud})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	tok, err := srv.auth.Sessions().Issue(t.Context(), session.Identity{Subject: "bob", Tenant: "acme", Roles: []string{"business_user"}, Method: "ldap"})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.auth.Routes(mux)
	req := httptest.NewRequest("POST", "/auth/logout", nil)
	req.Header.Set(wire.HeaderTenant, "acme")
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	if rec.Code != http.StatusNoContent {
		t.Fatalf("logout: %d %s", rec.Code, rec.Body)
	}
	var ev map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["action"] == audit.SessionRevoke {
			ev = m
		}
	}
	if ev == nil || ev["actor"] != "bob@acme" || ev["outcome"] != "ok" {
		t.Fatalf("audit log: %s", buf.String())
	}
	if strings.Contains(buf.String(), tok.AccessToken) {
		t.Error("the audit log holds the session token")
	}
}
