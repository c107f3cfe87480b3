package extauthz

import (
	"context"
	"testing"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/extauthz/session"
)

// BenchmarkCheckSession is BenchmarkCheck/token-cache with one of our own
// session tokens (an LDAP or SAML login) instead of an external JWT: the
// difference is what accepting sessions adds to the Check path.
func BenchmarkCheckSession(b *testing.B) {
	srv := benchServer(b, 0)
	ctx := context.Background()
	tok, err := srv.auth.Sessions().Issue(ctx, session.Identity{Subject: "alice", Tenant: "acme", Roles: []string{"business_user"},
		Attributes: map[string]string{"department": "finance"}, Method: "ldap", AMR: []string{"pwd"}})
	if err != nil {
		b.Fatal(err)
	}
	req := checkReq("acme", "POST", "/v1/workflows/etl/executions?dry_run=1", tok.AccessToken,
		map[string]string{"x-kailash-user": "forged", "accept": "application/json", "user-agent": "bench"})
	b.ReportAllocs()
	for b.Loop() {
		resp, err := srv.Check(ctx, req)
		if err != nil || resp.GetOkResponse() == nil {
			b.Fatal(resp, err)
		}
	}
}

// BenchmarkIdentityToken is the x-kailash-identity token for a repeat
// caller (cached) on the Check path.
func BenchmarkIdentityToken(b *testing.B) {
	srv := benchServer(b, 0)
	id := &envoyauth.Identity{Subject: "alice", Roles: []string{"business_user"}, Method: "jwt", Attributes: map[string]any{"department": "finance"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := srv.auth.IdentityToken("acme", id); err != nil {
			b.Fatal(err)
		}
	}
}
