package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

func runOut(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), args, &out)
	return out.String(), err
}

func TestValidateExample(t *testing.T) {
	out, err := runOut(t, "validate", "-c", "../../examples/kailash.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "ok (2 tenants") || !strings.Contains(out, "2 workflows") {
		t.Fatalf("unexpected: %s", out)
	}
}

func TestValidateNamesTheProblem(t *testing.T) {
	b, err := os.ReadFile("../../examples/kailash.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "kailash.yaml")
	bad := strings.Replace(string(b), "domains: [globex.localhost]", "domains: [acme.localhost]", 1)
	bad = strings.ReplaceAll(bad, "jwks_file: keys/dev.jwks.json", "jwks_file: "+abs(t, "../../examples/keys/dev.jwks.json"))
	bad = strings.Replace(bad, "workflows: workflows", "workflows: "+abs(t, "../../examples/workflows"), 1)
	if err := os.WriteFile(p, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = runOut(t, "validate", "-c", p)
	if err == nil || !strings.Contains(err.Error(), `tenant "globex": domains: "acme.localhost" is already served by tenant "acme"`) ||
		!strings.Contains(err.Error(), "kailash.yaml:") {
		t.Fatalf("got %v", err)
	}
}

func TestTranslatePrintsEnvoyResources(t *testing.T) {
	out, err := runOut(t, "translate", "-c", "../../examples/kailash.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kailash_http", "envoy.filters.http.ext_authz", "tenant: acme", "acme.localhost", "kailash_runner"} {
		if !strings.Contains(out, want) {
			t.Errorf("translate output lacks %q", want)
		}
	}
}

func TestTokenIsAcceptedByTheTenantsJWKS(t *testing.T) {
	out, err := runOut(t, "token", "-c", "../../examples/kailash.yaml", "--tenant", "globex", "--sub", "gina", "--roles", "admin, data_scientist", "--ttl", "5m")
	if err != nil {
		t.Fatal(err)
	}
	set, err := jwk.ReadFile("../../examples/keys/dev.jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Parse([]byte(strings.TrimSpace(out)), jwt.WithKeySet(set), jwt.WithIssuer("https://dev.kailash.local"), jwt.WithAudience("kailash"))
	if err != nil {
		t.Fatal(err)
	}
	roles, _ := tok.Get("roles")
	if tok.Subject() != "gina" || len(roles.([]any)) != 2 {
		t.Fatalf("claims: sub=%s roles=%v", tok.Subject(), roles)
	}
	if _, err := runOut(t, "token", "-c", "../../examples/kailash.yaml", "--tenant", "nope", "--sub", "x"); err == nil {
		t.Fatal("a token for an unknown tenant was minted")
	}
}

func TestUnknownCommand(t *testing.T) {
	if _, err := runOut(t, "frobnicate"); err == nil {
		t.Fatal("want an error")
	}
}
