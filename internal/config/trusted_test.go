package config

import (
	"strings"
	"testing"
)

func TestTrustedProxiesErrors(t *testing.T) {
	for _, tc := range []struct{ listener, want string }{
		{"xff_num_trusted_hops: 1, trusted_proxies: [10.0.0.0/8]", "envoy.listener: give xff_num_trusted_hops or trusted_proxies, not both"},
		{"trusted_proxies: [10.0.0.0]", `envoy.listener.trusted_proxies: "10.0.0.0" is not a CIDR`},
		{"xff_num_trusted_hops: 40", "envoy.listener.xff_num_trusted_hops: 40: at most 16"},
	} {
		body := strings.Replace(hardeningHead, "envoy: {listen: 127.0.0.1:1}", "envoy: {listen: 127.0.0.1:1, listener: {"+tc.listener+"}}", 1) +
			"tenants:\n" + hardeningTenant("acme", "")
		if _, err := loadString(t, body); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.listener, err, tc.want)
		}
	}
	body := strings.Replace(hardeningHead, "envoy: {listen: 127.0.0.1:1}", "envoy: {listen: 127.0.0.1:1, listener: {trusted_proxies: [10.0.0.0/8, 'fd00::/8'], proxy_protocol: true}}", 1) +
		"tenants:\n" + hardeningTenant("acme", "")
	if _, err := loadString(t, body); err != nil {
		t.Errorf("valid trusted proxies: %v", err)
	}
}
