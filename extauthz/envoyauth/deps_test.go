package envoyauth

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// forbiddenDeps are packages envoyauth must never link: it is the pure
// CheckRequest → input → CheckResponse core (`kailash policy eval
// --check-request` uses it), so no login, identity provider, store,
// network client or server code.
var forbiddenDeps = regexp.MustCompile(`ldap|saml|redis|extauthz/(login|session|oidc|ldapauth|samlsp|mfa|lockout|ratelimit|jwtauth)|internal/(telemetry|redisclient|mtls)|/extauthz$`)

// netHTTPVia are the only packages allowed to bring net/http in: gRPC
// (the Envoy auth proto's service stubs import it) and OPA (ast imports
// its util and JSON-schema packages, which import it). None of ours.
var netHTTPVia = regexp.MustCompile(`^(google\.golang\.org/grpc(/|$)|golang\.org/x/net/|net/http/|github\.com/open-policy-agent/opa/)`)

// TestEnvoyauthDeps fails when envoyauth links a forbidden package, or
// when net/http reaches it other than through gRPC or OPA.
func TestEnvoyauthDeps(t *testing.T) {
	goBin, err := exec.LookPath("go") // go test puts its own GOROOT/bin first on PATH
	if err != nil {
		t.Fatalf("no go command to list the dependencies with: %v", err)
	}
	out, err := exec.Command(goBin, "list", "-deps", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, ".").Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list -deps: %v\n%s", err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 10 {
		t.Fatalf("go list -deps listed %d packages; want the whole dependency graph:\n%s", len(lines), out)
	}
	self := false
	for _, line := range lines {
		fields := strings.Fields(line)
		pkg, imports := fields[0], fields[1:]
		if strings.HasSuffix(pkg, "/extauthz/envoyauth") {
			self = true
		}
		if forbiddenDeps.MatchString(pkg) {
			t.Errorf("envoyauth depends on %s", pkg)
		}
		for _, imp := range imports {
			if imp == "net/http" && !netHTTPVia.MatchString(pkg) {
				t.Errorf("net/http reaches envoyauth through %s (only gRPC and OPA may bring it)", pkg)
			}
		}
	}
	if !self {
		t.Fatalf("go list -deps did not list envoyauth itself:\n%s", out)
	}
}
