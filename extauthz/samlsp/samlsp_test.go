package samlsp

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
	dsig "github.com/russellhaering/goxmldsig"
)

const (
	spEntity  = "https://gw.example.com/auth/saml/metadata"
	acsURL    = "https://gw.example.com/auth/saml/acs"
	idpEntity = "https://idp.example.com/metadata"
	idpSSO    = "https://idp.example.com/sso"
)

// t0 is the test clock's start; certificates are valid around it.
var t0 = time.Now().UTC().Truncate(time.Second)

type keyPair struct {
	key  *rsa.PrivateKey
	cert *x509.Certificate
}

func newKeyPair(t testing.TB, cn string) keyPair {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    t0.Add(-24 * time.Hour),
		NotAfter:     t0.Add(24 * time.Hour),
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
	return keyPair{key: key, cert: cert}
}

func (k keyPair) write(t testing.TB, dir, name string) (keyFile, certFile string) {
	t.Helper()
	keyFile = filepath.Join(dir, name+".key")
	certFile = filepath.Join(dir, name+".crt")
	kb := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.key)})
	cb := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.cert.Raw})
	if err := os.WriteFile(keyFile, kb, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, cb, 0o600); err != nil {
		t.Fatal(err)
	}
	return keyFile, certFile
}

// testClock is a settable clock.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testIdP signs responses with a key of the test's own.
type testIdP struct {
	keyPair
}

func idpMetadata(t testing.TB, k keyPair) []byte {
	t.Helper()
	mu, _ := url.Parse(idpEntity)
	su, _ := url.Parse(idpSSO)
	idp := &saml.IdentityProvider{Key: k.key, Certificate: k.cert, MetadataURL: *mu, SSOURL: *su}
	b, err := xml.Marshal(idp.Metadata())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type fixture struct {
	sp    *ServiceProvider
	idp   testIdP
	clock *testClock
	cfg   Config
}

func newFixture(t testing.TB, mod func(*Config)) *fixture {
	t.Helper()
	dir := t.TempDir()
	idp := testIdP{newKeyPair(t, "idp")}
	spKeys := newKeyPair(t, "sp")
	keyFile, certFile := spKeys.write(t, dir, "sp")
	metaFile := filepath.Join(dir, "idp.xml")
	if err := os.WriteFile(metaFile, idpMetadata(t, idp.keyPair), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		EntityID: spEntity, ACSURL: acsURL, MetadataURL: spEntity,
		KeyFile: keyFile, CertFile: certFile, IDPMetadataFile: metaFile,
		GroupRoles: map[string]string{"Engineering": "developer", "Admins": "admin", "Ops": "admin"},
	}
	if mod != nil {
		mod(&cfg)
	}
	clock := &testClock{t: t0}
	sp, err := New(context.Background(), cfg, WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	sp.replay.(*MemoryReplayStore).now = clock.Now
	return &fixture{sp: sp, idp: idp, clock: clock, cfg: cfg}
}

// resp describes a response to build. The zero value plus defaults() is a
// valid SP-initiated response to request "req-1".
type resp struct {
	assertionID  string
	nameID       string
	audience     string
	destination  string
	recipient    string
	inResponseTo string
	issuer       string
	issued       time.Time
	notOnOrAfter time.Time
	attrs        map[string][]string
	signAssert   bool
	signResp     bool
	signer       *keyPair
}

func (r resp) defaults() resp {
	r.assertionID = "_a1"
	r.nameID = "alice@example.com"
	r.audience = spEntity
	r.destination = acsURL
	r.recipient = acsURL
	r.inResponseTo = "req-1"
	r.issuer = idpEntity
	r.issued = t0
	r.notOnOrAfter = t0.Add(5 * time.Minute)
	r.attrs = map[string][]string{
		ClaimEmail:      {"alice@example.com"},
		ClaimName:       {"Alice Liddell"},
		ClaimGivenName:  {"Alice"},
		ClaimSurname:    {"Liddell"},
		ClaimGroups:     {"Engineering", "Ops", "Unmapped"},
		ClaimDepartment: {"R&D"},
	}
	r.signAssert = true
	return r
}

func (f *fixture) signingContext(t testing.TB, k keyPair) *dsig.SigningContext {
	t.Helper()
	ctx := dsig.NewDefaultSigningContext(dsig.TLSCertKeyStore(tls.Certificate{
		Certificate: [][]byte{k.cert.Raw}, PrivateKey: k.key, Leaf: k.cert,
	}))
	ctx.Canonicalizer = dsig.MakeC14N10ExclusiveCanonicalizerWithPrefixList("")
	if err := ctx.SetSignatureMethod(dsig.RSASHA256SignatureMethod); err != nil {
		t.Fatal(err)
	}
	return ctx
}

func (f *fixture) assertion(t testing.TB, r resp) *saml.Assertion {
	t.Helper()
	a := &saml.Assertion{
		ID: r.assertionID, IssueInstant: r.issued, Version: "2.0",
		Issuer: saml.Issuer{Format: "urn:oasis:names:tc:SAML:2.0:nameid-format:entity", Value: r.issuer},
		Subject: &saml.Subject{
			NameID: &saml.NameID{Format: string(saml.EmailAddressNameIDFormat), Value: r.nameID},
			SubjectConfirmations: []saml.SubjectConfirmation{{
				Method: "urn:oasis:names:tc:SAML:2.0:cm:bearer",
				SubjectConfirmationData: &saml.SubjectConfirmationData{
					InResponseTo: r.inResponseTo, NotOnOrAfter: r.notOnOrAfter, Recipient: r.recipient,
				},
			}},
		},
		Conditions: &saml.Conditions{
			NotBefore: r.issued.Add(-time.Minute), NotOnOrAfter: r.notOnOrAfter,
			AudienceRestrictions: []saml.AudienceRestriction{{Audience: saml.Audience{Value: r.audience}}},
		},
		AuthnStatements: []saml.AuthnStatement{{
			AuthnInstant: r.issued, SessionIndex: "sess-1",
			AuthnContext: saml.AuthnContext{AuthnContextClassRef: &saml.AuthnContextClassRef{Value: "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"}},
		}},
	}
	var st saml.AttributeStatement
	for name, vals := range r.attrs {
		at := saml.Attribute{Name: name, NameFormat: "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"}
		for _, v := range vals {
			at.Values = append(at.Values, saml.AttributeValue{Type: "xs:string", Value: v})
		}
		st.Attributes = append(st.Attributes, at)
	}
	a.AttributeStatements = []saml.AttributeStatement{st}
	return a
}

// assertionEl renders a, signed by k when sign is set.
func (f *fixture) assertionEl(t testing.TB, a *saml.Assertion, sign bool, k keyPair) *etree.Element {
	t.Helper()
	if !sign {
		return a.Element()
	}
	signed, err := f.signingContext(t, k).SignEnveloped(a.Element())
	if err != nil {
		t.Fatal(err)
	}
	a.Signature = signed.ChildElements()[len(signed.ChildElements())-1]
	el := a.Element()
	a.Signature = nil
	return el
}

// responseEl wraps the assertion elements in a Response, signed when r.signResp.
func (f *fixture) responseEl(t testing.TB, r resp, assertions ...*etree.Element) *etree.Element {
	t.Helper()
	k := f.idp.keyPair
	if r.signer != nil {
		k = *r.signer
	}
	res := &saml.Response{
		ID: "_r1", InResponseTo: r.inResponseTo, Version: "2.0", IssueInstant: r.issued,
		Destination: r.destination,
		Issuer:      &saml.Issuer{Format: "urn:oasis:names:tc:SAML:2.0:nameid-format:entity", Value: r.issuer},
		Status:      saml.Status{StatusCode: saml.StatusCode{Value: saml.StatusSuccess}},
	}
	el := res.Element()
	for _, a := range assertions {
		el.AddChild(a.Copy())
	}
	if !r.signResp {
		return el
	}
	signed, err := f.signingContext(t, k).SignEnveloped(el)
	if err != nil {
		t.Fatal(err)
	}
	res.Signature = signed.ChildElements()[len(signed.ChildElements())-1]
	el = res.Element()
	for _, a := range assertions {
		el.AddChild(a.Copy())
	}
	return el
}

// build renders the standard response for r.
func (f *fixture) build(t testing.TB, r resp) string {
	t.Helper()
	k := f.idp.keyPair
	if r.signer != nil {
		k = *r.signer
	}
	a := f.assertionEl(t, f.assertion(t, r), r.signAssert, k)
	return serialize(t, f.responseEl(t, r, a))
}

func serialize(t testing.TB, el *etree.Element) string {
	t.Helper()
	doc := etree.NewDocument()
	doc.SetRoot(el)
	b, err := doc.WriteToBytes()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func post(xmlDoc, relayState string) *http.Request {
	form := url.Values{"SAMLResponse": {base64.StdEncoding.EncodeToString([]byte(xmlDoc))}}
	if relayState != "" {
		form.Set("RelayState", relayState)
	}
	req := httptest.NewRequest(http.MethodPost, acsURL, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

func TestParseResponseValid(t *testing.T) {
	for _, signing := range []struct {
		name                 string
		signAssert, signResp bool
	}{{"assertion signed", true, false}, {"response signed", false, true}, {"both signed", true, true}} {
		t.Run(signing.name, func(t *testing.T) {
			f := newFixture(t, nil)
			r := resp{}.defaults()
			r.signAssert, r.signResp = signing.signAssert, signing.signResp
			id, err := f.sp.ParseResponse(context.Background(), post(f.build(t, r), "/app"), []string{"req-0", "req-1"})
			if err != nil {
				t.Fatalf("ParseResponse: %v (reason %s, cause %v)", err, Reason(err), cause(err))
			}
			if id.Subject != "alice@example.com" || id.Issuer != idpEntity || id.SessionIndex != "sess-1" {
				t.Errorf("identity = %+v", id)
			}
			if id.Email != "alice@example.com" || id.DisplayName != "Alice Liddell" || id.GivenName != "Alice" || id.FamilyName != "Liddell" {
				t.Errorf("names = %+v", id)
			}
			if got := strings.Join(id.Groups, ","); got != "Engineering,Ops,Unmapped" {
				t.Errorf("groups = %s", got)
			}
			if got := strings.Join(id.Roles, ","); got != "admin,developer" {
				t.Errorf("roles = %s", got)
			}
			if got := id.Attributes(); got["department"] != "R&D" || got["email"] != "alice@example.com" {
				t.Errorf("attributes = %v", got)
			}
		})
	}
}

func cause(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return e.Err
	}
	return nil
}

func TestParseResponseRejects(t *testing.T) {
	other := newKeyPair(t, "mallory")
	cases := []struct {
		name    string
		make    func(t *testing.T, f *fixture) string
		ids     []string
		setup   func(*Config)
		advance time.Duration
		reason  string
	}{
		{name: "unsigned", reason: ReasonUnsigned, make: func(t *testing.T, f *fixture) string {
			r := resp{}.defaults()
			r.signAssert = false
			return f.build(t, r)
		}},
		{name: "signed by another key", reason: ReasonUntrustedCert, make: func(t *testing.T, f *fixture) string {
			r := resp{}.defaults()
			r.signer = &other
			return f.build(t, r)
		}},
		{name: "response signed by another key", reason: ReasonUntrustedCert, make: func(t *testing.T, f *fixture) string {
			r := resp{}.defaults()
			r.signAssert, r.signResp, r.signer = false, true, &other
			return f.build(t, r)
		}},
		{name: "tampered NameID", reason: ReasonBadSignature, make: func(t *testing.T, f *fixture) string {
			doc := f.build(t, resp{}.defaults())
			return strings.Replace(doc, ">alice@example.com</saml:NameID>", ">admin@example.com</saml:NameID>", 1)
		}},
		{name: "tampered group in a signed response", reason: ReasonBadSignature, make: func(t *testing.T, f *fixture) string {
			r := resp{}.defaults()
			r.signAssert, r.signResp = false, true
			doc := f.build(t, r)
			return strings.Replace(doc, ">Unmapped<", ">Admins<", 1)
		}},
		{name: "wrapping: unsigned assertion injected before a signed one", reason: ReasonMalformed, make: func(t *testing.T, f *fixture) string {
			good := resp{}.defaults()
			evil := good
			evil.assertionID, evil.nameID, evil.signAssert = "_evil", "admin@example.com", false
			evil.attrs = map[string][]string{ClaimGroups: {"Admins"}}
			a := f.assertionEl(t, f.assertion(t, evil), false, f.idp.keyPair)
			b := f.assertionEl(t, f.assertion(t, good), true, f.idp.keyPair)
			return serialize(t, f.responseEl(t, good, a, b))
		}},
		{name: "wrapping: unsigned assertion injected into a signed response", reason: ReasonBadSignature, make: func(t *testing.T, f *fixture) string {
			good := resp{}.defaults()
			good.signAssert, good.signResp = false, true
			doc := f.build(t, good)
			evil := good
			evil.assertionID, evil.nameID = "_evil", "admin@example.com"
			evilEl := serialize(t, f.assertionEl(t, f.assertion(t, evil), false, f.idp.keyPair))
			evilEl = strings.TrimPrefix(evilEl, xml.Header)
			i := strings.Index(doc, "<saml:Assertion")
			return doc[:i] + evilEl + doc[i:]
		}},
		{name: "wrapping: evil assertion with the signed one's ID and signature", reason: ReasonBadSignature, make: func(t *testing.T, f *fixture) string {
			good := resp{}.defaults()
			signed := f.assertionEl(t, f.assertion(t, good), true, f.idp.keyPair)
			evil := good
			evil.nameID = "admin@example.com" // same ID "_a1"
			ea := f.assertion(t, evil)
			ea.Signature = signed.SelectElement("Signature").Copy()
			evilEl := ea.Element()
			// The original signed assertion rides along inside the evil one.
			evilEl.AddChild(signed.Copy())
			return serialize(t, f.responseEl(t, good, evilEl))
		}},
		{name: "wrapping: signed assertion moved into Extensions", reason: ReasonUnsigned, make: func(t *testing.T, f *fixture) string {
			good := resp{}.defaults()
			signed := f.assertionEl(t, f.assertion(t, good), true, f.idp.keyPair)
			evil := good
			evil.assertionID, evil.nameID = "_evil", "admin@example.com"
			evilEl := f.assertionEl(t, f.assertion(t, evil), false, f.idp.keyPair)
			res := f.responseEl(t, good, evilEl)
			ext := etree.NewElement("samlp:Extensions")
			ext.AddChild(signed.Copy())
			res.InsertChildAt(1, ext)
			return serialize(t, res)
		}},
		{name: "wrapping: signed response moved into an unsigned one", reason: ReasonUnsigned, make: func(t *testing.T, f *fixture) string {
			good := resp{}.defaults()
			good.signAssert, good.signResp = false, true
			a := f.assertionEl(t, f.assertion(t, good), false, f.idp.keyPair)
			signedRes := f.responseEl(t, good, a)
			evil := good
			evil.nameID = "admin@example.com"
			evil.signResp = false
			ea := f.assertionEl(t, f.assertion(t, evil), false, f.idp.keyPair)
			outer := f.responseEl(t, evil, ea)
			ext := etree.NewElement("samlp:Extensions")
			ext.AddChild(signedRes)
			outer.InsertChildAt(1, ext)
			return serialize(t, outer)
		}},
		{name: "wrong audience", reason: ReasonWrongAudience, make: func(t *testing.T, f *fixture) string {
			r := resp{}.defaults()
			r.audience = "https://other-sp.example.com"
			return f.build(t, r)
		}},
		{name: "wrong destination", reason: ReasonWrongDestination, make: func(t *testing.T, f *fixture) string {
			r := resp{}.defaults()
			r.destination = "https://other-sp.example.com/acs"
			return f.build(t, r)
		}},
		{name: "wrong recipient", reason: ReasonWrongDestination, make: func(t *testing.T, f *fixture) string {
			r := resp{}.defaults()
			r.recipient = "https://other-sp.example.com/acs"
			return f.build(t, r)
		}},
		{name: "wrong issuer", reason: ReasonWrongIssuer, make: func(t *testing.T, f *fixture) string {
			r := resp{}.defaults()
			r.issuer = "https://evil-idp.example.com"
			return f.build(t, r)
		}},
		{name: "expired", reason: ReasonExpired, advance: 10 * time.Minute, make: func(t *testing.T, f *fixture) string {
			return f.build(t, resp{}.defaults())
		}},
		{name: "not yet valid", reason: ReasonNotYetValid, advance: -10 * time.Minute, make: func(t *testing.T, f *fixture) string {
			return f.build(t, resp{}.defaults())
		}},
		{name: "wrong InResponseTo", reason: ReasonInResponseTo, ids: []string{"req-other"}, make: func(t *testing.T, f *fixture) string {
			return f.build(t, resp{}.defaults())
		}},
		{name: "unsolicited when IdP-initiated is off", reason: ReasonInResponseTo, make: func(t *testing.T, f *fixture) string {
			r := resp{}.defaults()
			r.inResponseTo = ""
			return f.build(t, r)
		}},
		{name: "IdP-initiated on, but InResponseTo names an unknown request", reason: ReasonInResponseTo, ids: []string{"req-other"},
			setup: func(c *Config) { c.AllowIDPInitiated = true }, make: func(t *testing.T, f *fixture) string {
				return f.build(t, resp{}.defaults())
			}},
		{name: "not base64", reason: ReasonMalformed, make: func(t *testing.T, f *fixture) string { return "\x00" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.setup)
			doc := tc.make(t, f)
			f.clock.Add(tc.advance)
			ids := tc.ids
			if ids == nil {
				ids = []string{"req-1"}
			}
			req := post(doc, "")
			if tc.name == "not base64" {
				req = httptest.NewRequest(http.MethodPost, acsURL, strings.NewReader("SAMLResponse=%25%25%25"))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			id, err := f.sp.ParseResponse(context.Background(), req, ids)
			if err == nil {
				t.Fatalf("accepted: %+v", id)
			}
			if !errors.Is(err, ErrInvalidResponse) {
				t.Fatalf("err = %v, want ErrInvalidResponse", err)
			}
			if got := Reason(err); got != tc.reason {
				t.Errorf("reason = %s, want %s (cause: %v)", got, tc.reason, cause(err))
			}
			if f.sp.replay.(*MemoryReplayStore).Len() != 0 {
				t.Error("a refused assertion was recorded as used")
			}
		})
	}
}

func TestReplay(t *testing.T) {
	f := newFixture(t, nil)
	doc := f.build(t, resp{}.defaults())
	ctx := context.Background()
	if _, err := f.sp.ParseResponse(ctx, post(doc, ""), []string{"req-1"}); err != nil {
		t.Fatalf("first use: %v (%v)", err, cause(err))
	}
	_, err := f.sp.ParseResponse(ctx, post(doc, ""), []string{"req-1"})
	if !errors.Is(err, ErrInvalidResponse) || Reason(err) != ReasonReplayed {
		t.Fatalf("replay: err = %v, reason %s", err, Reason(err))
	}

	// Concurrent replays: exactly one wins.
	f2 := newFixture(t, func(c *Config) { c.AllowIDPInitiated = true })
	r := resp{}.defaults()
	r.inResponseTo = ""
	doc = f2.build(t, r)
	var ok atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := f2.sp.ParseResponse(ctx, post(doc, ""), nil); err == nil {
				ok.Add(1)
			} else if Reason(err) != ReasonReplayed {
				t.Errorf("unexpected error %v (%v)", err, cause(err))
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("%d concurrent uses accepted, want 1", ok.Load())
	}
}

type failingStore struct{}

func (failingStore) Consume(context.Context, string, time.Time) error {
	return errors.New("redis down")
}

func TestReplayStoreDownIsUnavailable(t *testing.T) {
	f := newFixture(t, nil)
	f.sp.replay = failingStore{}
	_, err := f.sp.ParseResponse(context.Background(), post(f.build(t, resp{}.defaults()), ""), []string{"req-1"})
	if !errors.Is(err, ErrUnavailable) || Reason(err) != ReasonReplayStore {
		t.Fatalf("err = %v, want ErrUnavailable/replay_store", err)
	}
}

func TestIdPInitiated(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.AllowIDPInitiated = true })
	r := resp{}.defaults()
	r.inResponseTo = ""
	id, err := f.sp.ParseResponse(context.Background(), post(f.build(t, r), ""), nil)
	if err != nil {
		t.Fatalf("IdP-initiated: %v (%v)", err, cause(err))
	}
	if id.Subject != "alice@example.com" {
		t.Errorf("subject = %q", id.Subject)
	}
}

func TestParseResponseRefusesArtifactAndGET(t *testing.T) {
	f := newFixture(t, nil)
	req := httptest.NewRequest(http.MethodPost, acsURL, strings.NewReader("SAMLart=AAQAAA"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if _, err := f.sp.ParseResponse(context.Background(), req, []string{"req-1"}); Reason(err) != ReasonUnsupported {
		t.Errorf("artifact: err = %v", err)
	}
	get := httptest.NewRequest(http.MethodGet, acsURL+"?SAMLResponse=x", nil)
	if _, err := f.sp.ParseResponse(context.Background(), get, []string{"req-1"}); Reason(err) != ReasonUnsupported {
		t.Errorf("GET: err = %v", err)
	}
}

func TestAttributeMappingOverrides(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.Attributes = Attributes{Email: "mail", Groups: "memberOf", Extra: map[string]string{"clearance": "clearance"}}
	})
	r := resp{}.defaults()
	r.attrs = map[string][]string{"mail": {"a@example.com"}, "memberOf": {"Admins", "Admins"}, "clearance": {"secret"}}
	id, err := f.sp.ParseResponse(context.Background(), post(f.build(t, r), ""), []string{"req-1"})
	if err != nil {
		t.Fatal(err, cause(err))
	}
	if id.Email != "a@example.com" || strings.Join(id.Groups, ",") != "Admins" || strings.Join(id.Roles, ",") != "admin" || id.Extra["clearance"] != "secret" {
		t.Errorf("identity = %+v", id)
	}
	if id.GivenName != "" || id.Extra["department"] != "" {
		t.Errorf("unexpected defaults kept: %+v", id)
	}
}

func TestLoginRedirect(t *testing.T) {
	f := newFixture(t, nil)
	u, reqID, err := f.sp.LoginRedirect(context.Background(), "/workflows?x=1")
	if err != nil {
		t.Fatal(err)
	}
	if reqID == "" {
		t.Fatal("no request id")
	}
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	if got := parsed.Scheme + "://" + parsed.Host + parsed.Path; got != idpSSO {
		t.Errorf("redirect to %s, want %s", got, idpSSO)
	}
	q := parsed.Query()
	if q.Get("RelayState") != "/workflows?x=1" || q.Get("SAMLRequest") == "" || q.Get("Signature") == "" || q.Get("SigAlg") == "" {
		t.Errorf("query = %v", q)
	}
	for _, bad := range []string{"//evil.com", "https://evil.com", "/\\evil.com", "\\\\evil.com", "evil.com", "/\t/evil.com", "javascript:alert(1)", "/%2F/evil.com", "/" + strings.Repeat("a", 100)} {
		if _, _, err := f.sp.LoginRedirect(context.Background(), bad); !errors.Is(err, ErrBadRelayState) {
			t.Errorf("relay state %q: err = %v, want ErrBadRelayState", bad, err)
		}
	}
	if _, _, err := f.sp.LoginRedirect(context.Background(), ""); err != nil {
		t.Errorf("empty relay state: %v", err)
	}
}

func TestSafeRelayState(t *testing.T) {
	for s, want := range map[string]bool{
		"/": true, "/app": true, "/app/x?y=1#frag": true, "/a%20b": true,
		"": false, "//evil.com": false, "///evil.com": false, "/\\evil.com": false, "/a\\b": false,
		"https://evil.com": false, "http:/evil.com": false, "evil.com/x": false, "/\x00": false,
		"/ x": false, "/\nx": false, "/\u00e9": false, "/%5cevil.com": false, "/%2f%2fevil.com": false,
		"?x=/": false, "#/x": false,
	} {
		if got := SafeRelayState(s); got != want {
			t.Errorf("SafeRelayState(%q) = %v, want %v", s, got, want)
		}
	}
}

func FuzzSafeRelayState(f *testing.F) {
	for _, s := range []string{"/", "/app", "//evil", "/\\evil", "https://x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !SafeRelayState(s) {
			return
		}
		u, err := url.Parse(s)
		if err != nil || u.Host != "" || u.Scheme != "" || !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") {
			t.Fatalf("accepted %q", s)
		}
		// Resolved against our origin, it stays on our origin.
		base, _ := url.Parse("https://gw.example.com/auth/saml/acs")
		if got := base.ResolveReference(u); got.Host != "gw.example.com" {
			t.Fatalf("%q resolves to host %q", s, got.Host)
		}
	})
}

func TestMetadata(t *testing.T) {
	f := newFixture(t, nil)
	b, err := f.sp.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	var ed saml.EntityDescriptor
	if err := xml.Unmarshal(b, &ed); err != nil {
		t.Fatal(err)
	}
	if ed.EntityID != spEntity || len(ed.SPSSODescriptors) != 1 {
		t.Fatalf("metadata = %s", b)
	}
	acs := ed.SPSSODescriptors[0].AssertionConsumerServices
	if len(acs) != 1 || acs[0].Location != acsURL || acs[0].Binding != saml.HTTPPostBinding {
		t.Errorf("ACS = %+v", acs)
	}
}

func TestIdPMetadataURLDownAtStart(t *testing.T) {
	idp := newKeyPair(t, "idp")
	var up atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/samlmetadata+xml")
		_, _ = w.Write(idpMetadata(t, idp))
	}))
	defer srv.Close() // httptest listens on 127.0.0.1

	dir := t.TempDir()
	keyFile, certFile := newKeyPair(t, "sp").write(t, dir, "sp")
	clock := &testClock{t: t0}
	sp, err := New(context.Background(), Config{
		EntityID: spEntity, ACSURL: acsURL, KeyFile: keyFile, CertFile: certFile,
		IDPMetadataURL: srv.URL + "/metadata",
	}, WithClock(clock.Now))
	if err != nil {
		t.Fatalf("New with the IdP down must not fail: %v", err)
	}
	if _, _, err := sp.LoginRedirect(context.Background(), "/"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("IdP down: err = %v, want ErrUnavailable", err)
	}
	up.Store(true)
	if _, _, err := sp.LoginRedirect(context.Background(), "/"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("within the retry interval: err = %v, want ErrUnavailable", err)
	}
	clock.Add(11 * time.Second)
	if _, _, err := sp.LoginRedirect(context.Background(), "/"); err != nil {
		t.Fatalf("after the IdP came up: %v", err)
	}
	// A failed refresh keeps the metadata we have.
	up.Store(false)
	if err := sp.RefreshMetadata(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("refresh with IdP down: %v", err)
	}
	if _, _, err := sp.LoginRedirect(context.Background(), "/"); err != nil {
		t.Fatalf("after a failed refresh: %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	dir := t.TempDir()
	keyFile, certFile := newKeyPair(t, "sp").write(t, dir, "sp")
	_, otherCert := newKeyPair(t, "x").write(t, dir, "x")
	base := Config{EntityID: spEntity, ACSURL: acsURL, KeyFile: keyFile, CertFile: certFile, IDPMetadataURL: "https://idp.example.com/md"}
	for name, mod := range map[string]func(*Config){
		"no entity id":        func(c *Config) { c.EntityID = "" },
		"relative acs":        func(c *Config) { c.ACSURL = "/auth/saml/acs" },
		"no metadata":         func(c *Config) { c.IDPMetadataURL = "" },
		"both metadata":       func(c *Config) { c.IDPMetadataFile = "x.xml" },
		"metadata ftp":        func(c *Config) { c.IDPMetadataURL = "ftp://idp/md" },
		"cert of another key": func(c *Config) { c.CertFile = otherCert },
		"missing key":         func(c *Config) { c.KeyFile = filepath.Join(dir, "nope") },
	} {
		c := base
		mod(&c)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if _, err := New(ctx, c); err == nil {
			t.Errorf("%s: accepted", name)
		}
		cancel()
	}
}

func TestMemoryReplayStore(t *testing.T) {
	clock := &testClock{t: t0}
	s := NewMemoryReplayStore(2)
	s.now = clock.Now
	ctx := context.Background()
	if err := s.Consume(ctx, "a", t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.Consume(ctx, "a", t0.Add(time.Minute)); !errors.Is(err, ErrReplayed) {
		t.Fatalf("second a: %v", err)
	}
	if err := s.Consume(ctx, "b", t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.Consume(ctx, "c", t0.Add(time.Minute)); err == nil || errors.Is(err, ErrReplayed) {
		t.Fatalf("full store: err = %v, want a store error", err)
	}
	clock.Add(time.Minute) // a expires
	if err := s.Consume(ctx, "c", t0.Add(3*time.Minute)); err != nil {
		t.Fatalf("after a expired: %v", err)
	}
	if err := s.Consume(ctx, "b", t0.Add(3*time.Minute)); !errors.Is(err, ErrReplayed) {
		t.Fatalf("b still held: %v", err)
	}
}
