package devtoken

import (
	"os"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

func TestMintVerifiesAgainstExampleJWKS(t *testing.T) {
	pem, err := os.ReadFile("../../examples/keys/dev-signing-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	k, err := Key(pem)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Mint(k, Claims{Issuer: "https://dev.kailash.local", Audience: []string{"kailash"}, Tenant: "acme", Subject: "alice", Roles: []string{"admin"}, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	set, err := jwk.ReadFile("../../examples/keys/dev.jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Parse([]byte(s), jwt.WithKeySet(set), jwt.WithValidate(true), jwt.WithAudience("kailash"))
	if err != nil {
		t.Fatalf("minted token does not verify with the example JWKS: %v", err)
	}
	if tok.Subject() != "alice" {
		t.Fatalf("sub = %q", tok.Subject())
	}
	if v, _ := tok.Get("tenant"); v != "acme" {
		t.Fatalf("tenant = %v", v)
	}
}
