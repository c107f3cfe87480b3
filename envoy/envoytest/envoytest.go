// Package envoytest finds the real Envoy for tests: in CI a missing Envoy
// fails the test; elsewhere it skips with a message naming `make envoy`.
package envoytest

import (
	"testing"

	"github.com/kailash-gw/kailash/envoy"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// Binary returns the Envoy binary the tests drive.
func Binary(t testing.TB) string {
	t.Helper()
	p, err := envoy.FindBinary()
	if err != nil {
		testenv.Missing(t, "Envoy", "run `make envoy`")
	}
	return p
}
