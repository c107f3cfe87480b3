package envoy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/envoy"
	"github.com/kailash-gw/kailash/envoy/envoytest"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/devcert"
)

// TestBootstrapXDSTLS: with envoy.xds_tls the ADS cluster gets a TLS
// transport socket naming the files by absolute path, which the real Envoy
// accepts; a missing file fails rendering, naming the config line.
func TestBootstrapXDSTLS(t *testing.T) {
	bin := envoytest.Binary(t)
	dir := t.TempDir()
	ca, err := devcert.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.WriteCA(dir, "ca"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"server", "envoy"} {
		p, err := ca.IssueClient(time.Hour, "kailash-envoy")
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := p.Write(dir, name); err != nil {
			t.Fatal(err)
		}
	}
	body := `envoy:
  listen: 127.0.0.1:8080
  xds_tls: {cert_file: envoy.pem, key_file: envoy-key.pem, ca_file: ca.pem, server_name: xds.internal}
xds:
  grpc: 127.0.0.1:18000
  tls: {cert_file: server.pem, key_file: server-key.pem, client_ca_file: ca.pem}
authz: {grpc: 127.0.0.1:9191}
runner: {http: 127.0.0.1:8081}
tenants:
  - id: a
    domains: [a.test]
    jwt: {issuer: i, audiences: [a], jwks_url: "https://idp.test/jwks"}
`
	cfgPath := filepath.Join(dir, "kailash.yaml")
	writeFile(t, cfgPath, []byte(body))
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	b, err := envoy.Bootstrap(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"UpstreamTlsContext", `filename: "` + filepath.Join(dir, "envoy-key.pem") + `"`, `sni: "xds.internal"`, "san_type: DNS", "tls_maximum_protocol_version: TLSv1_3"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("bootstrap lacks %q:\n%s", want, b)
		}
	}
	p := filepath.Join(dir, "b.yaml")
	writeFile(t, p, b)
	if out, err := exec.Command(bin, "--mode", "validate", "-c", p, "--disable-hot-restart").CombinedOutput(); err != nil {
		t.Fatalf("envoy rejects the bootstrap: %v\n%s", err, out)
	}

	if err := os.Remove(filepath.Join(dir, "envoy-key.pem")); err != nil {
		t.Fatal(err)
	}
	_, err = envoy.Bootstrap(cfg)
	if err == nil || !strings.Contains(err.Error(), "kailash.yaml:3: envoy.xds_tls.key_file") {
		t.Fatalf("missing key: %v, want an error naming kailash.yaml:3 and envoy.xds_tls.key_file", err)
	}
}
