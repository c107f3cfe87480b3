package ratelimit

import (
	"testing"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/wire"
)

// The emitted file loads in envoyproxy/ratelimit's format and gives every
// quota its limit for the descriptors the route actions send.
func TestEmitRLSConfigRoundTrip(t *testing.T) {
	cfg := testConfig("127.0.0.1:1")
	auth := uint64(7)
	cfg.Tenants[1].Limits = config.TenantLimits{PerUserPerHour: 9, AuthPerMinute: &auth}
	b, err := EmitRLSConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseRLSConfig(map[string][]byte{"kailash.yaml": b})
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	n := 0
	for i := range cfg.Tenants {
		for _, q := range cfg.Tenants[i].Quotas() {
			n++
			var kv []string
			for _, e := range q.Entries {
				v := e.Value
				if v == "" {
					v = "caller-1" // a wildcard entry: any value
				}
				kv = append(kv, e.Key, v)
			}
			l := c.Limit(wire.RateLimitDomain, desc(kv...))
			if l == nil {
				t.Fatalf("quota %s: no limit in\n%s", q.Name, b)
			}
			if uint64(l.RequestsPerUnit) != q.Limit || rlsUnitWindow(l.Unit) != q.Unit.Duration() || l.Name != q.Name {
				t.Errorf("quota %s: got %d per %v (%s), want %d per %s", q.Name, l.RequestsPerUnit, l.Unit, l.Name, q.Limit, q.Unit)
			}
		}
	}
	if n < 5 || c.Len() != n {
		t.Fatalf("%d quotas, %d limits loaded\n%s", n, c.Len(), b)
	}
	// A descriptor no quota has gets no limit there either.
	if c.Limit(wire.RateLimitDomain, desc("tenant", "acme", "role", "admin")) != nil {
		t.Error("role admin has no quota")
	}
}
