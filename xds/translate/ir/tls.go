package ir

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/kailash-gw/kailash/internal/config"
)

// Inputs are the contents of the files a config names, read by the caller
// (the control plane, `kailash translate`, a test), so translation stays
// free of I/O.
type Inputs struct {
	// Certificates are the tenants' certificate chains and keys (PEM), by
	// tenant id.
	Certificates map[string]KeyPair
	// ClientCAs are the tenants' client-certificate CAs (PEM), by tenant id.
	ClientCAs map[string][]byte
}

// KeyPair is a PEM certificate chain and its private key.
type KeyPair struct {
	CertPEM, KeyPEM []byte
}

// buildCertificate checks a tenant's certificate (the pair must parse and
// match) and resolves its SNI names; nil when the tenant has none.
func buildCertificate(cfg *config.Config, t *config.Tenant, in Inputs, tenantErr func(string, ...any)) *Certificate {
	if !t.TLS.Enabled() {
		return nil
	}
	if cfg.TLS.Listen.IsZero() {
		tenantErr("tls: a certificate needs tls.listen (the HTTPS listener)")
	}
	kp, ok := in.Certificates[t.ID]
	if !ok {
		tenantErr("tls: certificate %s and key %s were not read", t.TLS.CertFile, t.TLS.KeyFile)
		return nil
	}
	// crypto/tls checks that both parse and that the key matches the leaf;
	// its errors never quote key material.
	if _, err := tls.X509KeyPair(kp.CertPEM, kp.KeyPEM); err != nil {
		tenantErr("tls: cert_file %s / key_file %s: %v", t.TLS.CertFile, t.TLS.KeyFile, err)
		return nil
	}
	c := &Certificate{SecretName: SecretName(t.ID), CertPEM: kp.CertPEM, KeyPEM: kp.KeyPEM}
	if t.TLS.ClientCAFile != "" {
		ca, ok := in.ClientCAs[t.ID]
		if !ok || !x509.NewCertPool().AppendCertsFromPEM(ca) {
			tenantErr("tls.client_ca_file: %s was not read or holds no PEM certificate", t.TLS.ClientCAFile)
			return nil
		}
		c.ClientCA, c.RequireClientCert = ca, t.TLS.RequireClientCertificate
	}
	for _, d := range t.Domains {
		d = strings.ToLower(strings.TrimSpace(d))
		if h, _, err := net.SplitHostPort(d); err == nil {
			d = h
		}
		c.ServerNames = append(c.ServerNames, d)
	}
	slices.Sort(c.ServerNames)
	c.ServerNames = slices.Compact(c.ServerNames)
	return c
}

// buildHTTPS resolves the tls section and checks that no SNI name selects
// two tenants' certificates.
func buildHTTPS(cfg *config.Config, ir *IR) []error {
	var errs []error
	owner := map[string]string{}
	for _, vh := range ir.VirtualHosts {
		if vh.TLS == nil {
			continue
		}
		for _, n := range vh.TLS.ServerNames {
			if other, dup := owner[n]; dup && other != vh.TenantID {
				errs = append(errs, fmt.Errorf("tenant %q: tls: SNI name %q also selects tenant %q's certificate (domains differing only by port)", vh.TenantID, n, other))
			}
			owner[n] = vh.TenantID
		}
	}
	tc := cfg.TLS
	if tc.Listen.IsZero() {
		if tc.RedirectHTTP {
			errs = append(errs, errors.New("tls.redirect_http: needs tls.listen"))
		}
		return errs
	}
	if err := checkAddr(tc.Listen); err != nil {
		return append(errs, fmt.Errorf("tls.listen: %w", err))
	}
	a := addressOf(tc.Listen)
	if !tc.Listen.IsIP() {
		errs = append(errs, fmt.Errorf("tls.listen: %q: host must be an IP address (Envoy listeners do not resolve names)", tc.Listen))
	}
	if a == ir.Listener {
		errs = append(errs, fmt.Errorf("tls.listen: %q is also envoy.listen", tc.Listen))
	}
	https := &HTTPS{Listener: a, RedirectHTTP: tc.RedirectHTTP,
		Settings: buildListenerSettings(tc.Listener, cfg.Envoy.Listener)}
	switch tc.MinVersion {
	case "", "1.3":
		https.MinTLS13 = true
	case "1.2":
	default:
		errs = append(errs, fmt.Errorf("tls.min_version: %q: want 1.2 or 1.3", tc.MinVersion))
	}
	ir.HTTPS = https
	return errs
}
