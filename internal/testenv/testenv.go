// Package testenv is the shared test plumbing: free loopback ports, the CI
// rule for missing real components, and polling with generous deadlines.
package testenv

import (
	"context"
	"net"
	"os"
	"testing"
	"time"
)

// InCI reports whether the tests run under CI (CI=true), where a missing real
// component (Envoy, slapd, Redis, PostgreSQL) fails the test instead of
// skipping it.
func InCI() bool { return os.Getenv("CI") != "" && os.Getenv("CI") != "false" }

// Missing fails the test in CI and skips it elsewhere, with how to install.
func Missing(t testing.TB, what, install string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s is required in CI but missing: %s", what, install)
	}
	t.Skipf("%s not available (%s); skipping outside CI", what, install)
}

// SkipShort skips a long test under -short on a developer's machine. In CI
// it never skips: a -short run there would hide the real components (Envoy,
// the runner binary, the scale runs) the suite must exercise, so it fails.
func SkipShort(t testing.TB, why string) {
	t.Helper()
	if !testing.Short() {
		return
	}
	if InCI() {
		t.Fatalf("-short in CI would skip %s; CI runs the whole suite (make test)", why)
	}
	t.Skipf("-short: %s", why)
}

// FreeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago. Prefer binding ":0" directly where the server allows it.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Eventually polls cond every 50ms until it returns nil or the deadline
// passes, then fails with the last error.
func Eventually(t testing.TB, within time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Context returns a context cancelled when the test ends.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}
