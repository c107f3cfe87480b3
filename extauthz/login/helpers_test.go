package login

import (
	"github.com/kailash-gw/kailash/internal/testenv"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/kailash-gw/kailash/internal/config"
)

// t0 is the fixed test clock.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func fixedClock() time.Time { return t0 }

// testConfig is the authz server's test config (extauthz's helpers): two
// tenants, acme and globex, in-memory sessions. The login service reads
// only its tenants, sessions, lockout and login settings.
func testConfig(t testing.TB) *config.Config {
	t.Helper()
	c := &config.Config{
		Authz:  config.Authz{GRPC: config.MustHostPort("127.0.0.1:0"), HTTP: config.MustHostPort("127.0.0.1:0"), Timeout: 2 * time.Second},
		Policy: config.Policy{Decision: config.DefaultDecision},
		Tenants: []config.Tenant{
			{ID: "acme", Domains: []string{"acme.localhost"}, Plan: "enterprise", Features: []string{"workflows", "audit"}},
			{ID: "globex", Domains: []string{"globex.localhost"}, Plan: "team"},
		},
	}
	c.SetDefaults()
	return c
}

// loginTestService is a login service of testConfig at the fixed clock.
func loginTestService(t *testing.T) *Service {
	t.Helper()
	a, err := New(testConfig(t), Options{Now: fixedClock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

func headerMap(t *testing.T, hs []*corev3.HeaderValueOption) map[string]string {
	return testenv.HeaderMap(t, hs)
}
