package main

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/kailash-gw/kailash/internal/config"
)

// TestCertsDev: `kailash certs dev` writes a CA, a server certificate and
// Envoy's client certificate (CN = node id), keys owner-only, and prints
// config sections whose files load and check.
func TestCertsDev(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	out, err := runOut(t, "certs", "dev", "--out", dir, "--node-id", "edge-1", "--hosts", "127.0.0.1,xds.internal")
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(out, "envoy:\n")
	if i < 0 {
		t.Fatalf("no config printed:\n%s", out)
	}
	var cfg config.Config
	if err := yaml.Unmarshal([]byte(out[i:]), &cfg); err != nil {
		t.Fatalf("printed config does not parse: %v\n%s", err, out[i:])
	}
	if cfg.Envoy.NodeID != "edge-1" {
		t.Fatalf("node_id %q", cfg.Envoy.NodeID)
	}
	for field, sec := range map[string]config.ServerTLS{"xds.tls": cfg.XDS.TLS, "authz.tls": cfg.Authz.TLS, "ratelimit.tls": cfg.RateLimit.TLS} {
		if _, err := cfg.LoadServerTLS(field, sec); err != nil {
			t.Errorf("%s: %v", field, err)
		}
	}
	if err := cfg.CheckAllClientTLS(); err != nil {
		t.Error(err)
	}
	for _, k := range []string{"server-key.pem", "envoy-key.pem"} {
		st, err := os.Stat(filepath.Join(dir, k))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", k, st.Mode().Perm())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "ca-key.pem")); err == nil {
		t.Error("the CA's key was written")
	}
	caPEM, err := os.ReadFile(cfg.Envoy.XDSTLS.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	leaf := func(certFile, keyFile string) *x509.Certificate {
		kp, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(kp.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cli := leaf(cfg.Envoy.XDSTLS.CertFile, cfg.Envoy.XDSTLS.KeyFile)
	if _, err := cli.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil || cli.Subject.CommonName != "edge-1" {
		t.Errorf("client certificate: CN %q, verify %v", cli.Subject.CommonName, err)
	}
	srv := leaf(cfg.XDS.TLS.CertFile, cfg.XDS.TLS.KeyFile)
	for _, name := range []string{"127.0.0.1", "xds.internal"} {
		if _, err := srv.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
}
