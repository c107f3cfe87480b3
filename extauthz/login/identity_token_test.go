package login

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/internal/wire"
)

func TestIdentityTokenVerifiesWithOurJWKSAndIsReused(t *testing.T) {
	a := loginTestService(t)
	id := &envoyauth.Identity{Subject: "alice", Roles: []string{"admin"}, Method: "jwt", Attributes: map[string]any{"department": "eng"}}
	tok, err := a.minter.Token("acme", id)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := a.minter.Token("acme", id)
	if again != tok {
		t.Fatal("the same identity was signed twice within the token's lifetime")
	}
	other, _ := a.minter.Token("globex", id)
	if other == tok {
		t.Fatal("another tenant got the same identity token")
	}
	set, _ := a.ring.Keys(context.Background())
	parsed, err := jwt.ParseString(tok, jwt.WithKeySet(set), jwt.WithAudience("kailash-runner"), jwt.WithClock(jwt.ClockFunc(fixedClock)))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := parsed.Get("tenant"); v != "acme" || parsed.Subject() != "alice" {
		t.Fatalf("claims: %v", parsed.PrivateClaims())
	}
	if err := a.ring.Rotate(); err != nil {
		t.Fatal(err)
	}
	if rotated, _ := a.minter.Token("acme", id); rotated == tok {
		t.Fatal("a key rotation did not mint a new token")
	}
}

// The identity token's claims are named as the runner reads them
// (wire.Claim*): groups, method and attributes are left out when empty,
// tenant and roles never are.
func TestIdentityTokenClaimNames(t *testing.T) {
	a := loginTestService(t)
	payload := func(id *envoyauth.Identity) map[string]any {
		t.Helper()
		tok, err := a.IdentityToken("acme", id)
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(tok, ".")
		if len(parts) != 3 {
			t.Fatalf("not a compact JWS: %q", tok)
		}
		b, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	keys := func(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }
	bare := payload(&envoyauth.Identity{Subject: "bob"})
	if got, want := keys(bare), []string{"aud", "exp", "iat", "iss", "nbf", wire.ClaimRoles, "sub", wire.ClaimTenant}; !slices.Equal(got, want) {
		t.Errorf("claims of a bare identity %v, want %v", got, want)
	}
	if bare[wire.ClaimTenant] != "acme" || bare["sub"] != "bob" || len(bare[wire.ClaimRoles].([]any)) != 0 {
		t.Errorf("bare identity: %v", bare)
	}
	full := payload(&envoyauth.Identity{Subject: "alice", Roles: []string{"admin"}, Groups: []string{"eng"}, Method: "ldap",
		Attributes: map[string]any{"clearance": "secret"}})
	if got, want := keys(full), []string{wire.ClaimAttributes, "aud", "exp", wire.ClaimGroups, "iat", "iss", wire.ClaimMethod, "nbf", wire.ClaimRoles, "sub", wire.ClaimTenant}; !slices.Equal(got, want) {
		t.Errorf("claims of a full identity %v, want %v", got, want)
	}
	if full[wire.ClaimMethod] != "ldap" || full[wire.ClaimGroups].([]any)[0] != "eng" || full[wire.ClaimAttributes].(map[string]any)["clearance"] != "secret" {
		t.Errorf("full identity: %v", full)
	}
}
