package config

import (
	"strings"
	"testing"
)

// envoy.health_check_path: default, off, a path of one's own, and every
// refused form named by its field.
func TestHealthCheckPath(t *testing.T) {
	load := func(v string) (*Config, error) {
		head := strings.Replace(hardeningHead, "envoy: {listen: 127.0.0.1:1}", "envoy: {listen: 127.0.0.1:1, health_check_path: "+v+"}", 1)
		return loadString(t, head+"tenants:\n"+hardeningTenant("acme", ""))
	}
	for v, want := range map[string]string{`""`: DefaultHealthCheckPath, "off": "", "/lb/ping": "/lb/ping", "/.well-known/ready": "/.well-known/ready"} {
		c, err := load(v)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		if got := c.HealthCheckPath(); got != want {
			t.Errorf("%s: HealthCheckPath() = %q, want %q", v, got, want)
		}
	}
	for _, bad := range []string{"healthz", "//x", `"/h?x=1"`, `"/h#f"`, `"/a b"`, "/a/../b", "/auth/healthz", "/auth", "/", `"/h%2f"`} {
		_, err := load(bad)
		if err == nil || !strings.Contains(err.Error(), "envoy.health_check_path") {
			t.Errorf("%s: err %v, want one naming envoy.health_check_path", bad, err)
		}
	}
}
