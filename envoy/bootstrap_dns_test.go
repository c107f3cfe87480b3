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

// xds.grpc naming a host (a Kubernetes Service such as kailash-xds:18000,
// as deploy/helm renders it) gives a bootstrap the real Envoy accepts: the
// control plane's cluster is STRICT_DNS, not STATIC (which takes only IP
// literals: Envoy refused "malformed IP address"). An IP stays STATIC.
func TestBootstrapXDSByName(t *testing.T) {
	bin := envoytest.Binary(t)
	for _, tc := range []struct{ addr, want string }{
		{"kailash-xds.kailash.svc.cluster.local:18000", "type: STRICT_DNS"},
		{"127.0.0.1:18000", "type: STATIC"},
	} {
		cfg, err := config.Load("../examples/kailash.yaml")
		if err != nil {
			t.Fatal(err)
		}
		cfg.XDS.GRPC = tc.addr
		b, err := envoy.Bootstrap(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), tc.want) {
			t.Fatalf("%s: bootstrap has no %q:\n%s", tc.addr, tc.want, b)
		}
		p := filepath.Join(t.TempDir(), "b.yaml")
		writeFile(t, p, b)
		out, err := exec.Command(bin, "--mode", "validate", "-c", p, "--disable-hot-restart").CombinedOutput()
		if err != nil {
			t.Fatalf("%s: envoy rejects the bootstrap: %v\n%s", tc.addr, err, out)
		}
	}
}
