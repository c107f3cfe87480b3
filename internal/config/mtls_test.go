package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/devcert"
)

// mtlsSections are the extra lines of each top-level section (indented
// two spaces), so one file holds each section once.
type mtlsSections struct{ envoy, xds, authz, ratelimit string }

func (m mtlsSections) yaml() string {
	y := "runner: {http: 127.0.0.1:4}\ntenants:\n  - id: a\n    domains: [a.test]\n    jwt: {issuer: i, audiences: [a], jwks_file: k.json}\n" +
		"envoy:\n  listen: 127.0.0.1:1\n" + m.envoy +
		"xds:\n  grpc: 127.0.0.1:2\n" + m.xds +
		"authz:\n  grpc: 127.0.0.1:3\n" + m.authz
	if m.ratelimit != "" {
		y += "ratelimit:\n" + m.ratelimit
	}
	return y
}

// lineOf is the 1-based line of the first line of y containing s.
func lineOf(y, s string) int {
	for i, l := range strings.Split(y, "\n") {
		if strings.Contains(l, s) {
			return i + 1
		}
	}
	return 0
}

func writeMTLSConfig(t *testing.T, dir string, m mtlsSections) (*Config, error) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "k.json"), []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "kailash.yaml")
	if err := os.WriteFile(p, []byte(m.yaml()), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(p)
}

func TestMTLSValidationNamesFileLineAndField(t *testing.T) {
	const (
		srv = "{cert_file: s.pem, key_file: k.pem, client_ca_file: ca.pem}"
		cli = "{cert_file: c.pem, key_file: k.pem, ca_file: ca.pem}"
	)
	cases := []struct {
		name   string
		m      mtlsSections
		lineAt string // the line the error must name: the first containing this
		want   []string
	}{
		{"server section missing a file", mtlsSections{xds: "  tls:\n    cert_file: s.pem\n    key_file: s-key.pem\n", envoy: "  xds_tls: " + cli + "\n"},
			"    cert_file: s.pem", []string{"xds.tls.client_ca_file: required"}},
		{"client section missing a file", mtlsSections{xds: "  tls: " + srv + "\n", envoy: "  xds_tls: {cert_file: c.pem, ca_file: ca.pem}\n"},
			"xds_tls:", []string{"envoy.xds_tls.key_file: required"}},
		{"server without Envoy's client certificate", mtlsSections{authz: "  tls: " + srv + "\n"},
			"client_ca_file", []string{"authz.tls is set but envoy.authz_tls is not"}},
		{"Envoy client without server TLS", mtlsSections{envoy: "  ratelimit_tls: " + cli + "\n", ratelimit: "  grpc: 127.0.0.1:5\n"},
			"ratelimit_tls", []string{"envoy.ratelimit_tls is set but ratelimit.tls is not"}},
		{"node binding outside xds", mtlsSections{authz: "  tls: {cert_file: s.pem, key_file: k.pem, client_ca_file: ca.pem, bind_node_id: false}\n", envoy: "  authz_tls: " + cli + "\n"},
			"bind_node_id", []string{"authz.tls: bind_node_id and node_ids apply to xds.tls only"}},
		{"ratelimit tls without grpc", mtlsSections{ratelimit: "  tls: " + srv + "\n", envoy: "  ratelimit_tls: " + cli + "\n"},
			"client_ca_file", []string{"ratelimit.tls: needs ratelimit.grpc"}},
		{"unknown key", mtlsSections{xds: "  tls:\n    cert_file: s.pem\n    ca_file: x\n"},
			"", []string{"xds.tls.ca_file: unknown key (did you mean \"client_ca_file\"?)"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := writeMTLSConfig(t, t.TempDir(), c.m)
			if err == nil {
				t.Fatal("accepted")
			}
			want := c.want
			if c.lineAt != "" {
				want = append(want, fmt.Sprintf("kailash.yaml:%d: ", lineOf(c.m.yaml(), c.lineAt)))
			} else {
				want = append(want, fmt.Sprintf("kailash.yaml:%d:5: ", lineOf(c.m.yaml(), "ca_file: x")))
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadServerTLSChecksFiles(t *testing.T) {
	dir := t.TempDir()
	ca, err := devcert.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.Issue(time.Hour, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.Issue(time.Hour, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	aCert, aKey, err := a.Write(dir, "a")
	if err != nil {
		t.Fatal(err)
	}
	_, bKey, err := b.Write(dir, "b")
	if err != nil {
		t.Fatal(err)
	}
	sec := func(cert, key, caf string) mtlsSections {
		return mtlsSections{
			xds:   "  tls: {cert_file: " + cert + ", key_file: " + key + ", client_ca_file: " + caf + "}\n",
			envoy: "  xds_tls: {cert_file: " + cert + ", key_file: " + key + ", ca_file: " + caf + "}\n",
		}
	}
	load := func(t *testing.T, cert, key, caf string) error {
		t.Helper()
		cfg, err := writeMTLSConfig(t, dir, sec(cert, key, caf))
		if err != nil {
			t.Fatalf("structurally valid config refused: %v", err)
		}
		if _, err := cfg.LoadServerTLS("xds.tls", cfg.XDS.TLS); err != nil {
			return err
		}
		return cfg.CheckClientTLS("envoy.xds_tls", cfg.Envoy.XDSTLS)
	}
	if err := load(t, "a.pem", "a-key.pem", "ca.pem"); err != nil {
		t.Fatalf("good files (relative to the config): %v", err)
	}
	if err := load(t, aCert, aKey, caFile); err != nil {
		t.Fatalf("good files (absolute): %v", err)
	}
	cases := []struct {
		name, cert, key, ca string
		want                []string
	}{
		{"missing cert", "nope.pem", "a-key.pem", "ca.pem", []string{"kailash.yaml:11: ", "xds.tls.cert_file", "no such file"}},
		{"key of another certificate", "a.pem", bKey, "ca.pem", []string{"kailash.yaml:11: ", "xds.tls: cert_file and key_file", "private key does not match"}},
		{"key file is a certificate", "a.pem", "a.pem", "ca.pem", []string{"xds.tls.key_file", "no PEM private key"}},
		{"client CA is a leaf", "a.pem", "a-key.pem", "a.pem", []string{"xds.tls.client_ca_file", "not a CA certificate"}},
		{"client CA is not PEM", "a.pem", "a-key.pem", "k.json", []string{"xds.tls.client_ca_file", "no PEM certificate"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := load(t, c.cert, c.key, c.ca)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "BEGIN") {
				t.Errorf("error carries file contents: %q", err)
			}
		})
	}
}

func TestMayClaim(t *testing.T) {
	s := ServerTLS{NodeIDs: map[string][]string{"spiffe://k/envoy": {"edge-1"}}}
	for _, c := range []struct {
		ids  []string
		node string
		want bool
	}{
		{[]string{"edge-0"}, "edge-0", true},
		{[]string{"edge-0"}, "edge-1", false},
		{[]string{"x", "spiffe://k/envoy"}, "edge-1", true},
		{[]string{"edge-0"}, "", false},
		{nil, "edge-0", false},
	} {
		if got := s.MayClaim(c.ids, c.node); got != c.want {
			t.Errorf("MayClaim(%v, %q) = %v", c.ids, c.node, got)
		}
	}
	if !s.BindsNodeID() {
		t.Error("bind_node_id must default to true")
	}
}
