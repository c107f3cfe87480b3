package config

import (
	"strings"
	"testing"
	"time"
)

func TestRunnerLeaseTTL(t *testing.T) {
	const y = "envoy: {listen: 127.0.0.1:1}\nxds: {grpc: 127.0.0.1:2}\nauthz: {grpc: 127.0.0.1:3}\nrunner: {http: 127.0.0.1:4%s}\n" +
		"tenants:\n  - id: acme\n    domains: [acme.localhost]\n    jwt: {issuer: https://i.test, audiences: [k], jwks_url: https://i.test/jwks}\n"
	c, err := Parse("kailash.yaml", []byte(strings.Replace(y, "%s", ", lease_ttl: 30s", 1)))
	if err != nil || c.Runner.LeaseTTL != 30*time.Second {
		t.Fatalf("lease_ttl 30s: %v %+v", err, c)
	}
	if c, err := Parse("kailash.yaml", []byte(strings.Replace(y, "%s", "", 1))); err != nil || c.Runner.LeaseTTL != 0 {
		t.Fatalf("default: %v", err)
	}
	_, err = Parse("kailash.yaml", []byte(strings.Replace(y, "%s", ", lease_ttl: 100ms", 1)))
	if err == nil || !strings.Contains(err.Error(), "runner.lease_ttl") {
		t.Fatalf("lease_ttl 100ms: %v", err)
	}
}
