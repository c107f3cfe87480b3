// Package samltest plays a SAML identity provider in tests: an RSA key pair
// with a self-signed certificate, the IdP's metadata, and signed (or
// deliberately mis-signed) SAML Responses built with crewjam/saml and
// goxmldsig. It also reads the AuthnRequest out of a service provider's
// HTTP-Redirect and builds the HTTP-POST form a browser would send to the
// ACS.
//
// It is for tests only: keys are generated on the spot and written
// unencrypted, and every failure ends the test.
package samltest

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
	"io"
	"maps"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
	dsig "github.com/russellhaering/goxmldsig"
)

// KeyPair is an RSA key and a self-signed certificate for it.
type KeyPair struct {
	Key  *rsa.PrivateKey
	Cert *x509.Certificate
}

// NewKeyPair makes a 2048-bit RSA key and a self-signed signing certificate
// named cn, valid from 24 hours before now to 24 hours after.
func NewKeyPair(t testing.TB, cn string) KeyPair {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-24 * time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return KeyPair{Key: key, Cert: cert}
}

// WriteFiles writes the key (PKCS #1 PEM) and the certificate (PEM) to
// dir/name.key and dir/name.crt and returns their paths.
func (k KeyPair) WriteFiles(t testing.TB, dir, name string) (keyFile, certFile string) {
	t.Helper()
	keyFile = writeFile(t, filepath.Join(dir, name+".key"),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.Key)}))
	certFile = writeFile(t, filepath.Join(dir, name+".crt"),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.Cert.Raw}))
	return keyFile, certFile
}

// signingContext signs enveloped XML signatures with k: RSA-SHA256,
// exclusive C14N without inclusive prefixes.
func (k KeyPair) signingContext(t testing.TB) *dsig.SigningContext {
	t.Helper()
	ctx := dsig.NewDefaultSigningContext(dsig.TLSCertKeyStore(tls.Certificate{
		Certificate: [][]byte{k.Cert.Raw}, PrivateKey: k.Key, Leaf: k.Cert,
	}))
	ctx.Canonicalizer = dsig.MakeC14N10ExclusiveCanonicalizerWithPrefixList("")
	if err := ctx.SetSignatureMethod(dsig.RSASHA256SignatureMethod); err != nil {
		t.Fatal(err)
	}
	return ctx
}

// signature is the enveloped Signature element of el signed by k.
func (k KeyPair) signature(t testing.TB, el *etree.Element) *etree.Element {
	t.Helper()
	signed, err := k.signingContext(t).SignEnveloped(el)
	if err != nil {
		t.Fatal(err)
	}
	return signed.ChildElements()[len(signed.ChildElements())-1]
}

// IdP is a SAML identity provider: its entity ID (also its metadata URL),
// its HTTP-Redirect single sign-on URL, and the key pair it signs with.
type IdP struct {
	KeyPair
	EntityID string
	SSOURL   string
}

// NewIdP makes an IdP with a fresh key pair.
func NewIdP(t testing.TB, entityID, ssoURL string) *IdP {
	t.Helper()
	return &IdP{KeyPair: NewKeyPair(t, "test-idp"), EntityID: entityID, SSOURL: ssoURL}
}

// Metadata is the IdP's EntityDescriptor: its signing certificate and its
// SSO endpoints.
func (idp *IdP) Metadata(t testing.TB) []byte {
	t.Helper()
	mu, err := url.Parse(idp.EntityID)
	if err != nil {
		t.Fatal(err)
	}
	su, err := url.Parse(idp.SSOURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &saml.IdentityProvider{Key: idp.Key, Certificate: idp.Cert, MetadataURL: *mu, SSOURL: *su}
	b, err := xml.Marshal(p.Metadata())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// WriteMetadata writes the IdP's metadata to dir/idp.xml and returns the path.
func (idp *IdP) WriteMetadata(t testing.TB, dir string) string {
	t.Helper()
	return writeFile(t, filepath.Join(dir, "idp.xml"), idp.Metadata(t))
}

// Signing says which parts of a response are signed.
type Signing int

const (
	// SignAssertion signs the assertion only (the zero value).
	SignAssertion Signing = iota
	// SignResponse signs the Response only.
	SignResponse
	// SignBoth signs the assertion and the Response.
	SignBoth
	// SignNone signs nothing.
	SignNone
)

func (s Signing) assertion() bool { return s == SignAssertion || s == SignBoth }
func (s Signing) response() bool  { return s == SignResponse || s == SignBoth }

// Response describes a Response with one bearer assertion for an IdP to
// issue. Fields left zero take the defaults their comments give; everything
// else, including a wrong value, is used as it stands, so that a test can
// build a response an SP must refuse.
type Response struct {
	// ID is the Response's ID; default "_r-" + AssertionID.
	ID string
	// AssertionID is the assertion's ID; default "_a1".
	AssertionID string
	// InResponseTo is the AuthnRequest answered, on the Response and on
	// the subject confirmation; empty for an IdP-initiated response.
	InResponseTo string
	// Issuer is the issuer of both the Response and the assertion; default
	// the IdP's entity ID.
	Issuer string
	// NameID is the subject's NameID (email address format).
	NameID string
	// Audience is the assertion's audience restriction, the SP's entity ID.
	Audience string
	// Destination is the Response's Destination, the SP's ACS URL.
	Destination string
	// Recipient is the subject confirmation's Recipient; default
	// Destination.
	Recipient string
	// IssueInstant is when the Response, the assertion and the
	// authentication were issued; default now. The assertion's NotBefore
	// is a minute earlier.
	IssueInstant time.Time
	// NotOnOrAfter ends the assertion's and the subject confirmation's
	// validity; default IssueInstant + 5 minutes.
	NotOnOrAfter time.Time
	// SessionIndex is the AuthnStatement's session index; default "sess-1".
	SessionIndex string
	// Attributes are the assertion's attributes by Name (URI name format),
	// rendered in name order, each with its values in order.
	Attributes map[string][]string
	// Signing says what is signed; default the assertion only.
	Signing Signing
	// Signer signs instead of the IdP's own key (an untrusted signer).
	Signer *KeyPair
}

// withDefaults fills r's zero fields from idp.
func (idp *IdP) withDefaults(r Response) Response {
	if r.AssertionID == "" {
		r.AssertionID = "_a1"
	}
	if r.ID == "" {
		r.ID = "_r-" + r.AssertionID
	}
	if r.Issuer == "" {
		r.Issuer = idp.EntityID
	}
	if r.Recipient == "" {
		r.Recipient = r.Destination
	}
	if r.IssueInstant.IsZero() {
		r.IssueInstant = time.Now().UTC()
	}
	if r.NotOnOrAfter.IsZero() {
		r.NotOnOrAfter = r.IssueInstant.Add(5 * time.Minute)
	}
	if r.SessionIndex == "" {
		r.SessionIndex = "sess-1"
	}
	return r
}

// signer is the key r is signed with.
func (idp *IdP) signer(r Response) KeyPair {
	if r.Signer != nil {
		return *r.Signer
	}
	return idp.KeyPair
}

// Assertion is r's assertion, unsigned.
func (idp *IdP) Assertion(r Response) *saml.Assertion {
	r = idp.withDefaults(r)
	a := &saml.Assertion{
		ID: r.AssertionID, IssueInstant: r.IssueInstant, Version: "2.0",
		Issuer: saml.Issuer{Format: "urn:oasis:names:tc:SAML:2.0:nameid-format:entity", Value: r.Issuer},
		Subject: &saml.Subject{
			NameID: &saml.NameID{Format: string(saml.EmailAddressNameIDFormat), Value: r.NameID},
			SubjectConfirmations: []saml.SubjectConfirmation{{
				Method: "urn:oasis:names:tc:SAML:2.0:cm:bearer",
				SubjectConfirmationData: &saml.SubjectConfirmationData{
					InResponseTo: r.InResponseTo, NotOnOrAfter: r.NotOnOrAfter, Recipient: r.Recipient,
				},
			}},
		},
		Conditions: &saml.Conditions{
			NotBefore: r.IssueInstant.Add(-time.Minute), NotOnOrAfter: r.NotOnOrAfter,
			AudienceRestrictions: []saml.AudienceRestriction{{Audience: saml.Audience{Value: r.Audience}}},
		},
		AuthnStatements: []saml.AuthnStatement{{
			AuthnInstant: r.IssueInstant, SessionIndex: r.SessionIndex,
			AuthnContext: saml.AuthnContext{AuthnContextClassRef: &saml.AuthnContextClassRef{Value: "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"}},
		}},
	}
	var st saml.AttributeStatement
	for _, name := range slices.Sorted(maps.Keys(r.Attributes)) {
		at := saml.Attribute{Name: name, NameFormat: "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"}
		for _, v := range r.Attributes[name] {
			at.Values = append(at.Values, saml.AttributeValue{Type: "xs:string", Value: v})
		}
		st.Attributes = append(st.Attributes, at)
	}
	a.AttributeStatements = []saml.AttributeStatement{st}
	return a
}

// AssertionElement is r's assertion rendered, with an enveloped signature
// when r.Signing signs the assertion.
func (idp *IdP) AssertionElement(t testing.TB, r Response) *etree.Element {
	t.Helper()
	a := idp.Assertion(r)
	if !r.Signing.assertion() {
		return a.Element()
	}
	a.Signature = idp.signer(r).signature(t, a.Element())
	return a.Element()
}

// ResponseElement is r's Response (status Success) around copies of the
// given assertion elements, in order, with an enveloped signature over all
// of them when r.Signing signs the Response. The assertions need not be
// r's: a test can wrap any it has built, or none.
func (idp *IdP) ResponseElement(t testing.TB, r Response, assertions ...*etree.Element) *etree.Element {
	t.Helper()
	r = idp.withDefaults(r)
	res := &saml.Response{
		ID: r.ID, InResponseTo: r.InResponseTo, Version: "2.0", IssueInstant: r.IssueInstant,
		Destination: r.Destination,
		Issuer:      &saml.Issuer{Format: "urn:oasis:names:tc:SAML:2.0:nameid-format:entity", Value: r.Issuer},
		Status:      saml.Status{StatusCode: saml.StatusCode{Value: saml.StatusSuccess}},
	}
	build := func() *etree.Element {
		el := res.Element()
		for _, a := range assertions {
			el.AddChild(a.Copy())
		}
		return el
	}
	if !r.Signing.response() {
		return build()
	}
	res.Signature = idp.signer(r).signature(t, build())
	return build()
}

// ResponseXML is the XML document of r: its Response around its assertion,
// signed as r.Signing says.
func (idp *IdP) ResponseXML(t testing.TB, r Response) string {
	t.Helper()
	r = idp.withDefaults(r) // one IssueInstant for the Response and the assertion
	return Serialize(t, idp.ResponseElement(t, r, idp.AssertionElement(t, r)))
}

// Serialize renders el as an XML document (with the XML declaration).
func Serialize(t testing.TB, el *etree.Element) string {
	t.Helper()
	doc := etree.NewDocument()
	doc.SetRoot(el)
	b, err := doc.WriteToBytes()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// PostForm is the HTTP-POST binding's form for response: SAMLResponse, and
// RelayState unless it is empty.
func PostForm(response, relayState string) url.Values {
	form := url.Values{"SAMLResponse": {base64.StdEncoding.EncodeToString([]byte(response))}}
	if relayState != "" {
		form.Set("RelayState", relayState)
	}
	return form
}

// AuthnRequest reads the AuthnRequest from an HTTP-Redirect binding URL
// (the SP's redirect to the IdP), as the IdP would: the SAMLRequest
// parameter, base64, deflated. It fails the test unless the request parses
// and has an ID.
func AuthnRequest(t testing.TB, redirect *url.URL) *saml.AuthnRequest {
	t.Helper()
	deflated, err := base64.StdEncoding.DecodeString(redirect.Query().Get("SAMLRequest"))
	if err != nil {
		t.Fatal(err)
	}
	inflated, err := io.ReadAll(flate.NewReader(bytes.NewReader(deflated)))
	if err != nil {
		t.Fatal(err)
	}
	var authn saml.AuthnRequest
	if err := xml.Unmarshal(inflated, &authn); err != nil || authn.ID == "" {
		t.Fatalf("AuthnRequest: %v %s", err, inflated)
	}
	return &authn
}

func writeFile(t testing.TB, path string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
