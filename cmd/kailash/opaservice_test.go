package main

import (
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/devcert"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/policies"
)

// TestOPAConfigFileServicesWithCredentials: an opa-envoy-plugin config
// file with a bundle service over TLS (its own CA) that wants a bearer
// token (from ${ENV}) and a header, a signed bundle verified with the
// config's keys, and decision logs uploaded to another service with OAuth2
// client credentials — `kailash authz --config-file` runs it unchanged.
func TestOPAConfigFileServicesWithCredentials(t *testing.T) {
	dir := t.TempDir()
	polDir := filepath.Join(dir, "pol")
	if err := os.MkdirAll(polDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(polDir, "policy.rego"), []byte("package demo\n\ndefault allow := false\n\nallow if input.attributes.request.http.method == \"GET\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// OPA's mask policy (system.log.mask, the default mask_decision).
	if err := os.WriteFile(filepath.Join(polDir, "mask.rego"), []byte("package system.log\n\nmask contains \"/input/attributes/request/http/path\"\n\nmask contains {\"op\": \"upsert\", \"path\": \"/input/attributes/request/http/method\", \"value\": \"masked\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	priv := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)})
	pubDER, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	bundle, err := policies.Build(polDir, policies.BuildOptions{Revision: "r1", SigningKey: string(priv), KeyID: "k1"})
	if err != nil {
		t.Fatal(err)
	}

	var bundleGets, badBundleGets atomic.Int32
	bundles := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/bundles/authz.tar.gz" || r.Header.Get("Authorization") != "Bearer s3cret-token" || r.Header.Get("X-Org") != "acme" {
			badBundleGets.Add(1)
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		bundleGets.Add(1)
		w.Header().Set("Content-Type", "application/gzip")
		_, _ = w.Write(bundle)
	}))
	t.Cleanup(bundles.Close)
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: bundles.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}

	logged := make(chan []map[string]any, 8)
	statuses := make(chan map[string]any, 8)
	var tokens atomic.Int32
	logs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/oauth/token":
			if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" {
				http.Error(w, "bad grant", http.StatusBadRequest)
				return
			}
			if id, secret, ok := r.BasicAuth(); !ok || id != "kailash" || secret != "client-s3cret" {
				http.Error(w, "bad client", http.StatusUnauthorized)
				return
			}
			tokens.Add(1)
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"access_token":"oauth-token-1","token_type":"Bearer","expires_in":3600}`)
		case "/logs":
			if r.Header.Get("Authorization") != "Bearer oauth-token-1" {
				http.Error(w, "no token", http.StatusUnauthorized)
				return
			}
			var body io.Reader = r.Body
			if r.Header.Get("Content-Encoding") == "gzip" {
				gz, err := gzip.NewReader(r.Body)
				if err != nil {
					http.Error(w, err.Error(), 400)
					return
				}
				body = gz
			}
			var evs []map[string]any
			if err := json.NewDecoder(body).Decode(&evs); err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			logged <- evs
		case "/status/edge-1":
			if r.Header.Get("Authorization") != "Bearer oauth-token-1" {
				http.Error(w, "no token", http.StatusUnauthorized)
				return
			}
			var st map[string]any
			if err := json.NewDecoder(r.Body).Decode(&st); err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			select {
			case statuses <- st:
			default:
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(logs.Close)

	t.Setenv("TEST_BUNDLE_TOKEN", "s3cret-token")
	grpcAddr := testenv.FreeAddr(t)
	keyYAML, _ := json.Marshal(string(pub))
	cfg := writeTemp(t, "opa.yaml", fmt.Sprintf(`services:
  acmecorp:
    url: %s
    headers: {X-Org: acme}
    tls: {ca_cert: %s}
    credentials:
      bearer: {token: "${TEST_BUNDLE_TOKEN}"}
  logger:
    url: %s
    credentials:
      oauth2: {token_url: %s/oauth/token, client_id: kailash, client_secret: client-s3cret}
bundles:
  authz:
    service: acmecorp
    resource: bundles/authz.tar.gz
    signing: {keyid: k1}
keys:
  k1: {algorithm: RS256, key: %s}
decision_logs:
  service: logger
  reporting: {max_delay_seconds: 1}
labels: {app: demo}
status: {service: logger, partition_name: edge-1}
plugins:
  envoy_ext_authz_grpc: {addr: %s, path: demo/allow}
`, bundles.URL, caFile, logs.URL, logs.URL, keyYAML, grpcAddr))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"authz", "--server", "--config-file", cfg, "-log-level", "warn"}, io.Discard)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("authz: %v", err)
		}
	})
	_, check := dropInChecker(t, ctx, grpcAddr)
	if c, err := check("GET"); err != nil || c != 0 {
		t.Fatalf("GET: %d %v", c, err)
	}
	if c, err := check("DELETE"); err != nil || c != 7 {
		t.Fatalf("DELETE: %d %v", c, err)
	}
	if bundleGets.Load() == 0 || badBundleGets.Load() != 0 {
		t.Errorf("bundle downloads: %d with the credentials, %d without", bundleGets.Load(), badBundleGets.Load())
	}
	select {
	case evs := <-logged:
		if len(evs) == 0 || evs[0]["labels"].(map[string]any)["app"] != "demo" || evs[0]["bundles"] == nil {
			t.Errorf("uploaded decisions %v", evs)
		}
		if b, _ := json.Marshal(evs); strings.Contains(string(b), "s3cret") {
			t.Error("a credential is in the decision log")
		}
		// The bundle's mask policy ran: the path erased, the method replaced.
		httpIn := evs[0]["input"].(map[string]any)["attributes"].(map[string]any)["request"].(map[string]any)["http"].(map[string]any)
		if _, ok := httpIn["path"]; ok || httpIn["method"] != "masked" || !strings.Contains(fmt.Sprint(evs[0]["erased"]), "/input/attributes/request/http/path") {
			t.Errorf("mask policy not applied: http %v erased %v masked %v", httpIn, evs[0]["erased"], evs[0]["masked"])
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no decision log upload reached the service")
	}
	if tokens.Load() == 0 {
		t.Error("no OAuth2 token was fetched")
	}
	// OPA's status report: the active bundle's revision, the labels.
	select {
	case st := <-statuses:
		b, _ := st["bundles"].(map[string]any)["authz"].(map[string]any)
		labels, _ := st["labels"].(map[string]any)
		if b["active_revision"] != "r1" || labels["app"] != "demo" || labels["id"] == "" || labels["version"] == "" {
			t.Errorf("status report %v", st)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no status report reached the service")
	}
}

// keys + bundles.<name>.signing become the bundle signature check; a
// bundle signed by another key is then refused at start.
func TestOPAConfigFileSigningKeys(t *testing.T) {
	var d dropInFlags
	err := d.applyOPAConfig(writeTemp(t, "opa.yaml", `services: {s: {url: "http://b"}}
bundles: {main: {service: s, signing: {keyid: k1, scope: write}}}
keys: {k1: {algorithm: ES256, key: "PEM"}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if v := d.verify; v == nil || v.KeyID != "k1" || v.Algorithm != "ES256" || v.PublicKey != "PEM" || v.Scope != "write" {
		t.Fatalf("verification %+v", d.verify)
	}
}

// credentials.client_tls: the service's client presents the certificate;
// a server that requires one from its CA accepts it (and refuses a client
// without), and tls.ca_cert verifies the server.
func TestOPAServiceClientTLS(t *testing.T) {
	ca, err := devcert.NewCA("kailash test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	server, err := ca.Issue(time.Hour, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.IssueClient(time.Hour, "authz")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := client.Write(dir, "client")
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := tls.X509KeyPair(server.CertPEM, server.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	svc := opaService{Name: "s", URL: srv.URL}
	svc.TLS = &struct {
		CACert           string `yaml:"ca_cert"`
		SystemCARequired bool   `yaml:"system_ca_required"`
	}{CACert: caFile}
	plain, err := svc.client()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Get(srv.URL); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	svc.Credentials = &opaCredentials{ClientTLS: &struct {
		Cert       string `yaml:"cert"`
		PrivateKey string `yaml:"private_key"`
	}{Cert: certFile, PrivateKey: keyFile}}
	c, err := svc.client()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "authz" {
		t.Errorf("the server saw client %q", b)
	}
}
