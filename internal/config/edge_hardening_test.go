package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kailash-gw/kailash/internal/wire"
)

func loadString(t *testing.T, body string) (*Config, error) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "k.json"), []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "kailash.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(p)
}

const hardeningHead = "envoy: {listen: 127.0.0.1:1}\nxds: {grpc: 127.0.0.1:2}\nauthz: {grpc: 127.0.0.1:3}\nrunner: {http: 127.0.0.1:4}\n"

func hardeningTenant(id, extra string) string {
	return "  - id: " + id + "\n    domains: [" + id + ".test]\n    jwt: {issuer: i, audiences: [a], jwks_file: k.json}\n" + extra
}

// With the rate-limit service, every tenant gets the default login quota
// (per client IP), unless it sets its own or 0; without it, none.
func TestAuthQuotaDefault(t *testing.T) {
	c, err := loadString(t, "ratelimit: {grpc: 127.0.0.1:6}\n"+hardeningHead+"tenants:\n"+
		hardeningTenant("acme", "")+hardeningTenant("globex", "    limits: {auth_per_minute: 0}\n")+
		hardeningTenant("initech", "    limits: {auth_per_minute: 7}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"acme": DefaultAuthPerMinute, "globex": 0, "initech": 7}
	for i := range c.Tenants {
		tn := &c.Tenants[i]
		var got uint64
		for _, q := range tn.Quotas() {
			if q.Auth {
				got = q.Limit
				if q.Unit != Minute || len(q.Entries) != 3 || q.Entries[1] != (DescriptorEntry{wire.DescQuota, wire.QuotaAuth}) ||
					q.Entries[2] != (DescriptorEntry{wire.DescRemoteAddress, ""}) {
					t.Errorf("%s: login quota %+v", tn.ID, q)
				}
			}
		}
		if got != want[tn.ID] {
			t.Errorf("%s: login quota %d, want %d", tn.ID, got, want[tn.ID])
		}
	}
	c, err = loadString(t, hardeningHead+"tenants:\n"+hardeningTenant("acme", ""))
	if err != nil {
		t.Fatal(err)
	}
	if qs := c.Tenants[0].Quotas(); len(qs) != 0 {
		t.Errorf("quotas without a rate-limit service: %v", qs)
	}
	if _, err := loadString(t, hardeningHead+"tenants:\n"+hardeningTenant("acme", "    limits: {auth_per_minute: 5}\n")); err == nil ||
		!strings.Contains(err.Error(), "ratelimit.grpc") {
		t.Errorf("auth_per_minute without ratelimit.grpc: %v", err)
	}
}

func TestListenerValidation(t *testing.T) {
	_, err := loadString(t, "envoy: {listen: 127.0.0.1:1, listener: {idle_timeout: -1s, request_headers_timeout: -2s}}\n"+
		"tls: {listen: 127.0.0.1:5, listener: {stream_idle_timeout: -1s, request_timeout: -1s}}\n"+
		"xds: {grpc: 127.0.0.1:2}\nauthz: {grpc: 127.0.0.1:3}\nrunner: {http: 127.0.0.1:4}\ntenants:\n"+hardeningTenant("acme", ""))
	if err == nil {
		t.Fatal("negative listener timeouts accepted")
	}
	for _, w := range []string{"envoy.listener.idle_timeout", "envoy.listener.request_headers_timeout",
		"tls.listener.stream_idle_timeout", "tls.listener.request_timeout"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %s", err, w)
		}
	}
	if _, err := loadString(t, "envoy: {listen: 127.0.0.1:1, listener: {max_conections: 5}}\n"+hardeningHead[len("envoy: {listen: 127.0.0.1:1}\n"):]+
		"tenants:\n"+hardeningTenant("acme", "")); err == nil || !strings.Contains(err.Error(), "max_conections") {
		t.Errorf("misspelt listener key: %v", err)
	}
}
