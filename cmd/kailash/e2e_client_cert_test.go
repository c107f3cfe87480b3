package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/devcert"
	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/internal/wire"
)

// TestClientCertificateIdentity: through a real Envoy's HTTPS listener, a
// tenant's client certificate (its own CA, verified by Envoy and again by
// authz) is a service account by its SPIFFE ID; a certificate no identity
// maps is refused 401, one from another CA fails the handshake, a token
// still works without a certificate, and a tenant that requires one
// refuses the handshake without.
func TestClientCertificateIdentity(t *testing.T) {
	serverCA, err := devcert.NewCA("kailash e2e server CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	clientCA, err := devcert.NewCA("acme clients", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	strangerCA, err := devcert.NewCA("someone else", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile, err := clientCA.WriteCA(dir, "clients")
	if err != nil {
		t.Fatal(err)
	}
	certs := map[string][2]string{}
	for _, id := range []string{"acme", "globex"} {
		pair, err := serverCA.Issue(time.Hour, id+".localhost")
		if err != nil {
			t.Fatal(err)
		}
		c, k, err := pair.Write(dir, id)
		if err != nil {
			t.Fatal(err)
		}
		certs[id] = [2]string{c, k}
	}
	clientPair := func(ca *devcert.CA, names ...string) tls.Certificate {
		p, err := ca.IssueClient(time.Hour, names...)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.X509KeyPair(p.CertPEM, p.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ci := clientPair(clientCA, "deployer", "spiffe://acme.test/ci/deployer")
	unmapped := clientPair(clientCA, "other", "spiffe://acme.test/other")
	stranger := clientPair(strangerCA, "deployer", "spiffe://acme.test/ci/deployer")

	p := freePorts(t)
	httpsAddr := testenv.FreeAddr(t)
	body := configYAML(t, p, "initech") +
		tenantYAML(t, "acme") + fmt.Sprintf(`    tls:
      cert_file: %s
      key_file: %s
      client_ca_file: %s
      client_identities:
        - {spiffe_id: "spiffe://acme.test/ci/deployer", name: deployer, roles: [admin]}
`, certs["acme"][0], certs["acme"][1], caFile) +
		tenantYAML(t, "globex") + fmt.Sprintf("    tls: {cert_file: %s, key_file: %s, client_ca_file: %s, require_client_certificate: true}\n", certs["globex"][0], certs["globex"][1], caFile) +
		fmt.Sprintf("tls: {listen: %s}\n", httpsAddr)
	s := startStackWith(t, stackOptions{ports: p, body: body})
	roots := &tls.Config{RootCAs: serverCA.Pool(), MinVersion: tls.VersionTLS12}
	testenv.Eventually(t, 20*time.Second, func() error {
		_, err := handshake(httpsAddr, "acme.localhost", roots)
		return err
	})
	do := func(host string, cert *tls.Certificate, token string) (int, string, error) {
		cfg := roots.Clone()
		if cert != nil {
			// Sent whatever CAs the server names (Go would otherwise
			// leave out a certificate the server's list does not cover).
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		}
		req, _ := http.NewRequest("POST", "https://"+host+"/v1/workflows/hello/executions", strings.NewReader(`{}`))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := httpsClient(httpsAddr, cfg).Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	if code, b, err := do("acme.localhost", &ci, ""); err != nil || code != 200 {
		t.Fatalf("mapped client certificate: %d %s %v", code, b, err)
	}
	s.mu.Lock()
	up := s.upstream[len(s.upstream)-1]
	s.mu.Unlock()
	if up.Get(wire.HeaderUser) != "sa:deployer" || !strings.Contains(up.Get(wire.HeaderRoles), "admin") {
		t.Errorf("upstream identity %q %q", up.Get(wire.HeaderUser), up.Get(wire.HeaderRoles))
	}
	if code, b, err := do("acme.localhost", &unmapped, ""); err != nil || code != 401 || !strings.Contains(b, "client_certificate") {
		t.Errorf("unmapped certificate: %d %s %v, want 401 client_certificate", code, b, err)
	}
	if code, b, err := do("acme.localhost", &stranger, ""); err == nil {
		t.Errorf("a certificate from another CA was accepted: %d %s", code, b)
	}
	tok := s.token(devtoken.Claims{Tenant: "acme", Subject: "alice", Roles: []string{"admin"}})
	if code, b, err := do("acme.localhost", nil, tok); err != nil || code != 200 {
		t.Errorf("a token without a certificate: %d %s %v", code, b, err)
	}
	if code, b, err := do("acme.localhost", nil, ""); err != nil || code != 401 || !strings.Contains(b, "missing_token") {
		t.Errorf("neither: %d %s %v, want 401 missing_token", code, b, err)
	}
	if _, _, err := do("globex.localhost", nil, ""); err == nil {
		t.Error("globex requires a client certificate, yet the handshake without one succeeded")
	}
}
