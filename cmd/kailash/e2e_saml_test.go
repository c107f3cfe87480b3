package main

// End-to-end: SAML single sign-on through Envoy. The test plays the IdP with
// a key of its own: it reads the AuthnRequest from the redirect, signs a
// response to it and posts that to the ACS, as the browser would.

import (
	"bytes"
	"compress/flate"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"encoding/xml"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
	dsig "github.com/russellhaering/goxmldsig"
)

const (
	samlIdPEntity = "https://idp.example.com/metadata"
	samlIdPSSO    = "https://idp.example.com/sso"
)

type samlKeyPair struct {
	key  *rsa.PrivateKey
	cert *x509.Certificate
}

func newSAMLKeyPair(t *testing.T, cn string) samlKeyPair {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return samlKeyPair{key, cert}
}

func writeSAMLFile(t *testing.T, path string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// samlIdP is the test's IdP: its metadata file and its signing key.
type samlIdP struct {
	samlKeyPair
	acsURL, spEntity string
}

// samlTenantYAML is tenant acme with SAML login against idp.
func samlTenantYAML(t *testing.T, p ports, idp *samlIdP) string {
	dir := t.TempDir()
	sp := newSAMLKeyPair(t, "kailash-sp")
	keyFile := writeSAMLFile(t, filepath.Join(dir, "sp.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(sp.key)}))
	certFile := writeSAMLFile(t, filepath.Join(dir, "sp.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: sp.cert.Raw}))
	mu, _ := url.Parse(samlIdPEntity)
	su, _ := url.Parse(samlIdPSSO)
	md, err := xml.Marshal((&saml.IdentityProvider{Key: idp.key, Certificate: idp.cert, MetadataURL: *mu, SSOURL: *su}).Metadata())
	if err != nil {
		t.Fatal(err)
	}
	mdFile := writeSAMLFile(t, filepath.Join(dir, "idp.xml"), md)
	_, port, _ := strings.Cut(p.envoy, ":")
	idp.acsURL = "http://acme.localhost:" + port + "/auth/saml/acs"
	idp.spEntity = "http://acme.localhost:" + port + "/auth/saml/metadata"
	return tenantYAML(t, "acme") + fmt.Sprintf(`    saml:
      entity_id: %s
      acs_url: %s
      key_file: %s
      cert_file: %s
      idp_metadata_file: %s
      group_roles: {Engineering: data_scientist, Admins: admin}
`, idp.spEntity, idp.acsURL, keyFile, certFile, mdFile)
}

// response is a signed SAML response of the IdP for alice, answering requestID.
func (idp *samlIdP) response(t *testing.T, requestID, assertionID string) string {
	t.Helper()
	now := time.Now().UTC()
	a := &saml.Assertion{
		ID: assertionID, IssueInstant: now, Version: "2.0",
		Issuer: saml.Issuer{Format: "urn:oasis:names:tc:SAML:2.0:nameid-format:entity", Value: samlIdPEntity},
		Subject: &saml.Subject{
			NameID: &saml.NameID{Format: string(saml.EmailAddressNameIDFormat), Value: "alice@example.com"},
			SubjectConfirmations: []saml.SubjectConfirmation{{
				Method: "urn:oasis:names:tc:SAML:2.0:cm:bearer",
				SubjectConfirmationData: &saml.SubjectConfirmationData{
					InResponseTo: requestID, NotOnOrAfter: now.Add(5 * time.Minute), Recipient: idp.acsURL,
				},
			}},
		},
		Conditions: &saml.Conditions{
			NotBefore: now.Add(-time.Minute), NotOnOrAfter: now.Add(5 * time.Minute),
			AudienceRestrictions: []saml.AudienceRestriction{{Audience: saml.Audience{Value: idp.spEntity}}},
		},
		AuthnStatements: []saml.AuthnStatement{{AuthnInstant: now, SessionIndex: "sess-1",
			AuthnContext: saml.AuthnContext{AuthnContextClassRef: &saml.AuthnContextClassRef{Value: "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"}}}},
		AttributeStatements: []saml.AttributeStatement{{Attributes: []saml.Attribute{
			{Name: "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress", Values: []saml.AttributeValue{{Type: "xs:string", Value: "alice@example.com"}}},
			{Name: "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups", Values: []saml.AttributeValue{{Type: "xs:string", Value: "Engineering"}}},
			{Name: "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/department", Values: []saml.AttributeValue{{Type: "xs:string", Value: "R&D"}}},
		}}},
	}
	sc := dsig.NewDefaultSigningContext(dsig.TLSCertKeyStore(tls.Certificate{Certificate: [][]byte{idp.cert.Raw}, PrivateKey: idp.key, Leaf: idp.cert}))
	sc.Canonicalizer = dsig.MakeC14N10ExclusiveCanonicalizerWithPrefixList("")
	if err := sc.SetSignatureMethod(dsig.RSASHA256SignatureMethod); err != nil {
		t.Fatal(err)
	}
	signed, err := sc.SignEnveloped(a.Element())
	if err != nil {
		t.Fatal(err)
	}
	a.Signature = signed.ChildElements()[len(signed.ChildElements())-1]
	res := &saml.Response{ID: "_r-" + assertionID, InResponseTo: requestID, Version: "2.0", IssueInstant: now, Destination: idp.acsURL,
		Issuer: &saml.Issuer{Format: "urn:oasis:names:tc:SAML:2.0:nameid-format:entity", Value: samlIdPEntity},
		Status: saml.Status{StatusCode: saml.StatusCode{Value: saml.StatusSuccess}}}
	el := res.Element()
	el.AddChild(a.Element())
	doc := etree.NewDocument()
	doc.SetRoot(el)
	b, err := doc.WriteToBytes()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// samlStart is GET /auth/saml/login through Envoy: it returns the
// AuthnRequest id (read from the redirect, as the IdP would) and the
// request cookie.
func (s *stack) samlStart(t *testing.T, returnTo string) (requestID string, cookie *http.Cookie) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+s.ports.envoy+"/auth/saml/login?return_to="+url.QueryEscape(returnTo), nil)
	req.Host = "acme.localhost"
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("saml login: %d", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Scheme+"://"+loc.Host+loc.Path != samlIdPSSO {
		t.Fatalf("redirect to %q", resp.Header.Get("Location"))
	}
	if rs := loc.Query().Get("RelayState"); rs != returnTo {
		t.Fatalf("RelayState %q", rs)
	}
	raw, err := base64.StdEncoding.DecodeString(loc.Query().Get("SAMLRequest"))
	if err != nil {
		t.Fatal(err)
	}
	inflated, err := io.ReadAll(flate.NewReader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	var authn saml.AuthnRequest
	if err := xml.Unmarshal(inflated, &authn); err != nil || authn.ID == "" {
		t.Fatalf("AuthnRequest: %v %s", err, inflated)
	}
	for _, c := range resp.Cookies() {
		if c.Name == "kailash_saml_req" {
			cookie = c
		}
	}
	if cookie == nil || cookie.Value != authn.ID || !cookie.HttpOnly || !cookie.Secure || cookie.SameSite != http.SameSiteNoneMode || cookie.Path != "/auth/saml/" {
		t.Fatalf("request cookie %+v for request %q", cookie, authn.ID)
	}
	return authn.ID, cookie
}

// samlPost posts a response to the ACS through Envoy, as the browser would.
func (s *stack) samlPost(t *testing.T, response, relayState string, cookie *http.Cookie) *http.Response {
	t.Helper()
	form := url.Values{"SAMLResponse": {base64.StdEncoding.EncodeToString([]byte(response))}, "RelayState": {relayState}}
	req, _ := http.NewRequest("POST", "http://"+s.ports.envoy+"/auth/saml/acs", strings.NewReader(form.Encode()))
	req.Host = "acme.localhost"
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func (s *stack) metrics(t *testing.T) string {
	t.Helper()
	resp, err := s.client.Get("http://" + s.ports.authzHTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestSAMLEndToEnd(t *testing.T) {
	idp := &samlIdP{samlKeyPair: newSAMLKeyPair(t, "test-idp")}
	s := startStackConfig(t, func(p ports) string { return configYAML(t, p) + samlTenantYAML(t, p, idp) })

	t.Run("SP metadata", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "http://"+s.ports.envoy+"/auth/saml/metadata", nil)
		req.Host = "acme.localhost"
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), idp.acsURL) || !strings.Contains(string(b), idp.spEntity) {
			t.Fatalf("metadata: %d %s", resp.StatusCode, b)
		}
	})

	var response string
	var cookie *http.Cookie
	t.Run("login, ACS, session on a protected route", func(t *testing.T) {
		var id string
		id, cookie = s.samlStart(t, "/app/dashboard?tab=1")
		response = idp.response(t, id, "_a-"+id)
		resp := s.samlPost(t, response, "/app/dashboard?tab=1", cookie)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/app/dashboard?tab=1" {
			t.Fatalf("acs: %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		session := cookieValue(resp.Cookies(), "kailash_session")
		if session == "" || cookieValue(resp.Cookies(), "kailash_refresh") == "" {
			t.Fatalf("no session cookies: %v", resp.Header.Values("Set-Cookie"))
		}
		got := s.mustDo("acme.localhost", "", map[string]string{"Cookie": "kailash_session=" + session})
		if got.code != 200 {
			t.Fatalf("protected route: %d %s", got.code, got.body)
		}
		if m := got.json(t); m["user"] != "alice@example.com" || m["tenant"] != "acme" {
			t.Fatalf("runner saw %s", got.body)
		}
	})

	t.Run("replayed response is refused", func(t *testing.T) {
		if resp := s.samlPost(t, response, "/", cookie); resp.StatusCode != http.StatusUnauthorized || cookieValue(resp.Cookies(), "kailash_session") != "" {
			t.Fatalf("replay: %d", resp.StatusCode)
		}
		// Nor with a fresh request cookie: that request is not the one answered.
		id, fresh := s.samlStart(t, "/")
		if resp := s.samlPost(t, response, "/", fresh); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("replay with a fresh request %s: %d", id, resp.StatusCode)
		}
	})

	t.Run("tampered response is refused", func(t *testing.T) {
		id, c := s.samlStart(t, "/")
		doc := strings.Replace(idp.response(t, id, "_a-"+id), ">Engineering<", ">Admins<", 1)
		if resp := s.samlPost(t, doc, "/", c); resp.StatusCode != http.StatusUnauthorized || cookieValue(resp.Cookies(), "kailash_session") != "" {
			t.Fatalf("tampered: %d", resp.StatusCode)
		}
		if m := s.metrics(t); !strings.Contains(m, `kailash_auth_logins_total{method="saml",reason="bad_signature",result="failure"} 1`) ||
			!strings.Contains(m, `kailash_auth_logins_total{method="saml",reason="",result="success"} 1`) {
			t.Fatalf("metrics:\n%s", grepLines(m, "kailash_auth_logins_total"))
		}
	})

	t.Run("open redirect refused", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "http://"+s.ports.envoy+"/auth/saml/login?return_to="+url.QueryEscape("//evil.example/"), nil)
		req.Host = "acme.localhost"
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("return_to=//evil.example/: %d", resp.StatusCode)
		}
		// A valid response posted with an off-site RelayState lands on "/".
		id, c := s.samlStart(t, "/")
		if resp := s.samlPost(t, idp.response(t, id, "_b-"+id), "https://evil.example/", c); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
			t.Fatalf("off-site RelayState: %d %q", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
