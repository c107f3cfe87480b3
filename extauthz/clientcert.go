package extauthz

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"slices"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/internal/config"
)

// ReasonClientCertificate: the tenant requires a client certificate that
// maps to a service account, and the request's does not (or has none).
const ReasonClientCertificate envoyauth.Reason = "client_certificate"

// clientCertIdentity is the service account the request's client
// certificate maps to: the chain verified again against the route tenant's
// CAs (Envoy verified it against the CAs of the tenant the client named in
// SNI, which need not be the route's), then its SPIFFE ID (URI SAN) or
// subject CN looked up in tls.client_identities. nil, nil: no certificate.
func clientCertIdentity(req *authv3.CheckRequest, ts *tenantState) (*envoyauth.Identity, error) {
	raw := req.GetAttributes().GetSource().GetCertificate()
	if raw == "" {
		return nil, nil
	}
	pemText, err := url.QueryUnescape(raw)
	if err != nil {
		return nil, fmt.Errorf("the client certificate is not URL-encoded PEM")
	}
	var certs []*x509.Certificate
	rest := []byte(pemText)
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			certs = append(certs, c)
		}
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("the client certificate does not parse")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	leaf := certs[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ts.clientPool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("the client certificate is not from tenant %s's CA: %v", ts.cfg.ID, err)
	}
	var uris []string
	for _, u := range leaf.URIs {
		uris = append(uris, u.String())
	}
	for _, ci := range ts.cfg.TLS.ClientIdentities {
		if (ci.SPIFFEID != "" && slices.Contains(uris, ci.SPIFFEID)) || (ci.Subject != "" && leaf.Subject.CommonName == ci.Subject) {
			return clientIdentity(ci, ts.cfg.ID, uris, leaf), nil
		}
	}
	return nil, fmt.Errorf("no tls.client_identities entry maps the client certificate (subject %q, URIs %v)", leaf.Subject.CommonName, uris)
}

func clientIdentity(ci config.ClientIdentity, tenant string, uris []string, leaf *x509.Certificate) *envoyauth.Identity {
	attrs := map[string]any{"certificate_subject": leaf.Subject.CommonName}
	if len(uris) > 0 {
		attrs["spiffe_id"] = uris[0]
	}
	return &envoyauth.Identity{Subject: "sa:" + ci.Name, Tenant: tenant, Roles: slices.Clone(ci.Roles), Method: "mtls",
		Attributes: attrs, ExpiresAt: leaf.NotAfter}
}
