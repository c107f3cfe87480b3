package envoy_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kailash-gw/kailash/envoy"
	"github.com/kailash-gw/kailash/envoy/envoytest"
	"github.com/kailash-gw/kailash/internal/config"
)

// TestBootstrapXDSReplicas: envoy.xds_addresses become the endpoints of the
// one kailash_xds cluster (STATIC for IPs, STRICT_DNS once a name is
// listed), and real Envoy accepts both forms.
func TestBootstrapXDSReplicas(t *testing.T) {
	bin := envoytest.Binary(t)
	for _, tc := range []struct {
		addrs []string
		typ   string
		want  []string
	}{
		{[]string{"127.0.0.1:18000", "127.0.0.2:18001"}, "STATIC",
			[]string{`address: "127.0.0.1", port_value: 18000`, `address: "127.0.0.2", port_value: 18001`}},
		{[]string{"localhost:18000", "127.0.0.1:18001"}, "STRICT_DNS",
			[]string{`address: "localhost", port_value: 18000`, `address: "127.0.0.1", port_value: 18001`}},
	} {
		cfg, err := config.Load("../examples/kailash.yaml")
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range tc.addrs {
			cfg.Envoy.XDSAddresses = append(cfg.Envoy.XDSAddresses, config.HostPortFromText(a))
		}
		b, err := envoy.Bootstrap(cfg)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if n := strings.Count(s, "socket_address: {"); n != len(tc.addrs)+1 { // + admin
			t.Errorf("%v: %d socket addresses, want %d:\n%s", tc.addrs, n, len(tc.addrs)+1, s)
		}
		for _, w := range append(tc.want, "type: "+tc.typ) {
			if !strings.Contains(s, w) {
				t.Errorf("%v: bootstrap lacks %q:\n%s", tc.addrs, w, s)
			}
		}
		if strings.Count(s, "- name: kailash_xds") != 1 {
			t.Errorf("%v: want one kailash_xds cluster:\n%s", tc.addrs, s)
		}
		p := filepath.Join(t.TempDir(), "b.yaml")
		writeFile(t, p, b)
		if out, err := exec.Command(bin, "--mode", "validate", "-c", p, "--disable-hot-restart").CombinedOutput(); err != nil {
			t.Fatalf("%v: envoy rejects the bootstrap: %v\n%s", tc.addrs, err, out)
		}
	}
}
