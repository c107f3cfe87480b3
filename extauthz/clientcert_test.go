package extauthz

import (
	"net/url"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/devcert"
)

// authz verifies a client certificate against the route tenant's own CAs:
// one Envoy accepted for another tenant (chosen by SNI) is refused.
func TestClientCertVerifiedForTheRouteTenant(t *testing.T) {
	caA, _ := devcert.NewCA("A", time.Hour)
	caB, _ := devcert.NewCA("B", time.Hour)
	ts := &tenantState{clientPool: caA.Pool(), cfg: config.Tenant{ID: "a", TLS: config.TenantTLS{ClientIdentities: []config.ClientIdentity{
		{SPIFFEID: "spiffe://a/ci", Name: "ci", Roles: []string{"admin"}}, {Subject: "robot", Name: "robot"}}}}}
	req := func(ca *devcert.CA, names ...string) *authv3.CheckRequest {
		p, err := ca.IssueClient(time.Hour, names...)
		if err != nil {
			t.Fatal(err)
		}
		return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Source: &authv3.AttributeContext_Peer{Certificate: url.QueryEscape(string(p.CertPEM))}}}
	}
	if id, err := clientCertIdentity(req(caA, "x", "spiffe://a/ci"), ts); err != nil || id.Subject != "sa:ci" || id.Method != "mtls" || id.Roles[0] != "admin" {
		t.Fatalf("SPIFFE ID: %+v %v", id, err)
	}
	if id, err := clientCertIdentity(req(caA, "robot"), ts); err != nil || id.Subject != "sa:robot" {
		t.Fatalf("subject: %+v %v", id, err)
	}
	if _, err := clientCertIdentity(req(caB, "x", "spiffe://a/ci"), ts); err == nil || !strings.Contains(err.Error(), "not from tenant a's CA") {
		t.Errorf("another tenant's CA: %v", err)
	}
	if _, err := clientCertIdentity(req(caA, "x", "spiffe://a/other"), ts); err == nil || !strings.Contains(err.Error(), "no tls.client_identities entry") {
		t.Errorf("unmapped: %v", err)
	}
	if id, err := clientCertIdentity(&authv3.CheckRequest{}, ts); id != nil || err != nil {
		t.Errorf("no certificate: %v %v", id, err)
	}
}
