package config

import (
	"strings"
	"testing"
)

// TestXDSAddressesValidated: a bad entry, a duplicate, and several hosts
// under mutual TLS without the name to check are config errors.
func TestXDSAddressesValidated(t *testing.T) {
	base, err := Load("../../examples/kailash.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addrs []string
		want  string
	}{
		{[]string{"127.0.0.1"}, "envoy.xds_addresses[0]"},
		{[]string{"127.0.0.1:1", "127.0.0.1:1"}, "listed twice"},
	} {
		cfg := *base
		for _, a := range tc.addrs {
			cfg.Envoy.XDSAddresses = append(cfg.Envoy.XDSAddresses, HostPortFromText(a))
		}
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error naming %q", tc.addrs, err, tc.want)
		}
	}
}
