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

func TestGeoHeaderConfig(t *testing.T) {
	head := func(envoy string) string {
		return strings.Replace(hardeningHead, "envoy: {listen: 127.0.0.1:1}", "envoy: {listen: 127.0.0.1:1, "+envoy+"}", 1) + "tenants:\n" + hardeningTenant("acme", "")
	}
	for _, tc := range []struct{ envoy, want string }{
		{"geo_header: {name: CF-IPCountry}", "envoy.geo_header: no trusted source"},
		{"geo_header: {name: 'x-kailash-country', trusted_sources: [10.0.0.0/8]}", "envoy.geo_header.name"},
		{"geo_header: {name: 'bad header', trusted_sources: [10.0.0.0/8]}", "envoy.geo_header.name"},
		{"geo_header: {name: CF-IPCountry, trusted_sources: [10.0.0.1]}", `envoy.geo_header.trusted_sources: "10.0.0.1" is not a CIDR`},
		{"geo_header: {trusted_sources: [10.0.0.0/8]}", "set without envoy.geo_header.name"},
	} {
		if _, err := loadString(t, head(tc.envoy)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.envoy, err, tc.want)
		}
	}
	c, err := loadString(t, head("listener: {trusted_proxies: [10.0.0.0/8]}, geo_header: {name: CF-IPCountry}"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.GeoTrustedSources(); len(got) != 1 || got[0] != "10.0.0.0/8" {
		t.Errorf("trusted sources default to the listener's trusted_proxies: %v", got)
	}
}

// Errors found after decoding are placed at the field's own line and
// column (or its nearest written parent), not at the file alone.
func TestValidationErrorsAtTheFieldsLine(t *testing.T) {
	body := "envoy:\n  listen: 127.0.0.1:1\n  routes: sideways\nxds: {grpc: 127.0.0.1:2}\nauthz: {grpc: 127.0.0.1:3}\nrunner: {http: 127.0.0.1:4}\n" +
		"telemetry:\n  otlp_endpoint: http://c:4317\n  sampling_ratio: 1.5\ntenants:\n" + hardeningTenant("acme", "")
	_, err := loadString(t, body)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"kailash.yaml:3:3: envoy.routes:", "kailash.yaml:9:3: telemetry.sampling_ratio: 1.5"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v\nwant %q", err, want)
		}
	}
}

func TestClientCertificateConfig(t *testing.T) {
	for _, tc := range []struct{ tls, want string }{
		{"    tls: {client_ca_file: ca.pem}\n", "client certificates need the tenant's own certificate"},
		{"    tls: {cert_file: k.json, key_file: k.json, client_identities: [{spiffe_id: 'spiffe://a/b', name: x}]}\n", "tls.client_ca_file: required"},
		{"    tls: {cert_file: k.json, key_file: k.json, client_ca_file: k.json}\n", "holds no PEM certificate"},
		{"    tls: {cert_file: k.json, key_file: k.json, client_ca_file: k.json, client_identities: [{spiffe_id: 'http://x', name: x}]}\n", "want spiffe://"},
		{"    tls: {cert_file: k.json, key_file: k.json, client_ca_file: k.json, client_identities: [{name: x}]}\n", "give spiffe_id or subject, exactly one"},
	} {
		body := "tls: {listen: 127.0.0.1:9}\n" + hardeningHead + "tenants:\n" + hardeningTenant("acme", tc.tls)
		if _, err := loadString(t, body); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.tls, err, tc.want)
		}
	}
}
