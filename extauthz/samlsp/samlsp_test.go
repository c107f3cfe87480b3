package samlsp

import (
	"context"
	"encoding/xml"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"

	"github.com/kailash-gw/kailash/internal/samltest"
)

const (
	spEntity  = "https://gw.example.com/auth/saml/metadata"
	acsURL    = "https://gw.example.com/auth/saml/acs"
	idpEntity = "https://idp.example.com/metadata"
	idpSSO    = "https://idp.example.com/sso"
)

// t0 is the test clock's start; certificates are valid around it.
var t0 = time.Now().UTC().Truncate(time.Second)

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

type fixture struct {
	sp    *ServiceProvider
	idp   *samltest.IdP
	clock *testClock
	cfg   Config
}

func newFixture(t testing.TB, mod func(*Config)) *fixture {
	t.Helper()
	dir := t.TempDir()
	idp := samltest.NewIdP(t, idpEntity, idpSSO)
	keyFile, certFile := samltest.NewKeyPair(t, "sp").WriteFiles(t, dir, "sp")
	cfg := Config{
		EntityID: spEntity, ACSURL: acsURL, MetadataURL: spEntity,
		KeyFile: keyFile, CertFile: certFile, IDPMetadataFile: idp.WriteMetadata(t, dir),
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

// valid is a valid SP-initiated response to request "req-1" at t0, its
// assertion signed.
func valid() samltest.Response {
	return samltest.Response{
		ID:           "_r1",
		AssertionID:  "_a1",
		NameID:       "alice@example.com",
		Audience:     spEntity,
		Destination:  acsURL,
		Recipient:    acsURL,
		InResponseTo: "req-1",
		Issuer:       idpEntity,
		IssueInstant: t0,
		NotOnOrAfter: t0.Add(5 * time.Minute),
		Attributes: map[string][]string{
			ClaimEmail:      {"alice@example.com"},
			ClaimName:       {"Alice Liddell"},
			ClaimGivenName:  {"Alice"},
			ClaimSurname:    {"Liddell"},
			ClaimGroups:     {"Engineering", "Ops", "Unmapped"},
			ClaimDepartment: {"R&D"},
		},
		Signing: samltest.SignAssertion,
	}
}

func post(xmlDoc, relayState string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, acsURL, strings.NewReader(samltest.PostForm(xmlDoc, relayState).Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

func TestParseResponseValid(t *testing.T) {
	for _, signing := range []struct {
		name    string
		signing samltest.Signing
	}{{"assertion signed", samltest.SignAssertion}, {"response signed", samltest.SignResponse}, {"both signed", samltest.SignBoth}} {
		t.Run(signing.name, func(t *testing.T) {
			f := newFixture(t, nil)
			r := valid()
			r.Signing = signing.signing
			id, err := f.sp.ParseResponse(context.Background(), post(f.idp.ResponseXML(t, r), "/app"), []string{"req-0", "req-1"})
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
	other := samltest.NewKeyPair(t, "mallory")
	cases := []struct {
		name    string
		make    func(t *testing.T, f *fixture) string
		ids     []string
		setup   func(*Config)
		advance time.Duration
		reason  string
	}{
		{name: "unsigned", reason: ReasonUnsigned, make: func(t *testing.T, f *fixture) string {
			r := valid()
			r.Signing = samltest.SignNone
			return f.idp.ResponseXML(t, r)
		}},
		{name: "signed by another key", reason: ReasonUntrustedCert, make: func(t *testing.T, f *fixture) string {
			r := valid()
			r.Signer = &other
			return f.idp.ResponseXML(t, r)
		}},
		{name: "response signed by another key", reason: ReasonUntrustedCert, make: func(t *testing.T, f *fixture) string {
			r := valid()
			r.Signing, r.Signer = samltest.SignResponse, &other
			return f.idp.ResponseXML(t, r)
		}},
		{name: "tampered NameID", reason: ReasonBadSignature, make: func(t *testing.T, f *fixture) string {
			doc := f.idp.ResponseXML(t, valid())
			return strings.Replace(doc, ">alice@example.com</saml:NameID>", ">admin@example.com</saml:NameID>", 1)
		}},
		{name: "tampered group in a signed response", reason: ReasonBadSignature, make: func(t *testing.T, f *fixture) string {
			r := valid()
			r.Signing = samltest.SignResponse
			doc := f.idp.ResponseXML(t, r)
			return strings.Replace(doc, ">Unmapped<", ">Admins<", 1)
		}},
		{name: "wrapping: unsigned assertion injected before a signed one", reason: ReasonMalformed, make: func(t *testing.T, f *fixture) string {
			good := valid()
			evil := good
			evil.AssertionID, evil.NameID, evil.Signing = "_evil", "admin@example.com", samltest.SignNone
			evil.Attributes = map[string][]string{ClaimGroups: {"Admins"}}
			a := f.idp.AssertionElement(t, evil)
			b := f.idp.AssertionElement(t, good)
			return samltest.Serialize(t, f.idp.ResponseElement(t, good, a, b))
		}},
		{name: "wrapping: unsigned assertion injected into a signed response", reason: ReasonBadSignature, make: func(t *testing.T, f *fixture) string {
			good := valid()
			good.Signing = samltest.SignResponse
			doc := f.idp.ResponseXML(t, good)
			evil := good // its assertion unsigned
			evil.AssertionID, evil.NameID = "_evil", "admin@example.com"
			evilEl := samltest.Serialize(t, f.idp.AssertionElement(t, evil))
			evilEl = strings.TrimPrefix(evilEl, xml.Header)
			i := strings.Index(doc, "<saml:Assertion")
			return doc[:i] + evilEl + doc[i:]
		}},
		{name: "wrapping: evil assertion with the signed one's ID and signature", reason: ReasonBadSignature, make: func(t *testing.T, f *fixture) string {
			good := valid()
			signed := f.idp.AssertionElement(t, good)
			evil := good
			evil.NameID = "admin@example.com" // same ID "_a1"
			ea := f.idp.Assertion(evil)
			ea.Signature = signed.SelectElement("Signature").Copy()
			evilEl := ea.Element()
			// The original signed assertion rides along inside the evil one.
			evilEl.AddChild(signed.Copy())
			return samltest.Serialize(t, f.idp.ResponseElement(t, good, evilEl))
		}},
		{name: "wrapping: signed assertion moved into Extensions", reason: ReasonUnsigned, make: func(t *testing.T, f *fixture) string {
			good := valid()
			signed := f.idp.AssertionElement(t, good)
			evil := good
			evil.AssertionID, evil.NameID, evil.Signing = "_evil", "admin@example.com", samltest.SignNone
			evilEl := f.idp.AssertionElement(t, evil)
			res := f.idp.ResponseElement(t, good, evilEl)
			ext := etree.NewElement("samlp:Extensions")
			ext.AddChild(signed.Copy())
			res.InsertChildAt(1, ext)
			return samltest.Serialize(t, res)
		}},
		{name: "wrapping: signed response moved into an unsigned one", reason: ReasonUnsigned, make: func(t *testing.T, f *fixture) string {
			good := valid()
			good.Signing = samltest.SignResponse
			a := f.idp.AssertionElement(t, good) // unsigned
			signedRes := f.idp.ResponseElement(t, good, a)
			evil := good
			evil.NameID = "admin@example.com"
			evil.Signing = samltest.SignNone
			ea := f.idp.AssertionElement(t, evil)
			outer := f.idp.ResponseElement(t, evil, ea)
			ext := etree.NewElement("samlp:Extensions")
			ext.AddChild(signedRes)
			outer.InsertChildAt(1, ext)
			return samltest.Serialize(t, outer)
		}},
		{name: "wrong audience", reason: ReasonWrongAudience, make: func(t *testing.T, f *fixture) string {
			r := valid()
			r.Audience = "https://other-sp.example.com"
			return f.idp.ResponseXML(t, r)
		}},
		{name: "wrong destination", reason: ReasonWrongDestination, make: func(t *testing.T, f *fixture) string {
			r := valid()
			r.Destination = "https://other-sp.example.com/acs"
			return f.idp.ResponseXML(t, r)
		}},
		{name: "wrong recipient", reason: ReasonWrongDestination, make: func(t *testing.T, f *fixture) string {
			r := valid()
			r.Recipient = "https://other-sp.example.com/acs"
			return f.idp.ResponseXML(t, r)
		}},
		{name: "wrong issuer", reason: ReasonWrongIssuer, make: func(t *testing.T, f *fixture) string {
			r := valid()
			r.Issuer = "https://evil-idp.example.com"
			return f.idp.ResponseXML(t, r)
		}},
		{name: "expired", reason: ReasonExpired, advance: 10 * time.Minute, make: func(t *testing.T, f *fixture) string {
			return f.idp.ResponseXML(t, valid())
		}},
		{name: "not yet valid", reason: ReasonNotYetValid, advance: -10 * time.Minute, make: func(t *testing.T, f *fixture) string {
			return f.idp.ResponseXML(t, valid())
		}},
		{name: "wrong InResponseTo", reason: ReasonInResponseTo, ids: []string{"req-other"}, make: func(t *testing.T, f *fixture) string {
			return f.idp.ResponseXML(t, valid())
		}},
		{name: "unsolicited when IdP-initiated is off", reason: ReasonInResponseTo, make: func(t *testing.T, f *fixture) string {
			r := valid()
			r.InResponseTo = ""
			return f.idp.ResponseXML(t, r)
		}},
		{name: "IdP-initiated on, but InResponseTo names an unknown request", reason: ReasonInResponseTo, ids: []string{"req-other"},
			setup: func(c *Config) { c.AllowIDPInitiated = true }, make: func(t *testing.T, f *fixture) string {
				return f.idp.ResponseXML(t, valid())
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
	doc := f.idp.ResponseXML(t, valid())
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
	r := valid()
	r.InResponseTo = ""
	doc = f2.idp.ResponseXML(t, r)
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
	_, err := f.sp.ParseResponse(context.Background(), post(f.idp.ResponseXML(t, valid()), ""), []string{"req-1"})
	if !errors.Is(err, ErrUnavailable) || Reason(err) != ReasonReplayStore {
		t.Fatalf("err = %v, want ErrUnavailable/replay_store", err)
	}
}

func TestIdPInitiated(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.AllowIDPInitiated = true })
	r := valid()
	r.InResponseTo = ""
	id, err := f.sp.ParseResponse(context.Background(), post(f.idp.ResponseXML(t, r), ""), nil)
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
	r := valid()
	r.Attributes = map[string][]string{"mail": {"a@example.com"}, "memberOf": {"Admins", "Admins"}, "clearance": {"secret"}}
	id, err := f.sp.ParseResponse(context.Background(), post(f.idp.ResponseXML(t, r), ""), []string{"req-1"})
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
	idp := samltest.NewIdP(t, idpEntity, idpSSO)
	var up atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/samlmetadata+xml")
		_, _ = w.Write(idp.Metadata(t))
	}))
	defer srv.Close() // httptest listens on 127.0.0.1

	dir := t.TempDir()
	keyFile, certFile := samltest.NewKeyPair(t, "sp").WriteFiles(t, dir, "sp")
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
	keyFile, certFile := samltest.NewKeyPair(t, "sp").WriteFiles(t, dir, "sp")
	_, otherCert := samltest.NewKeyPair(t, "x").WriteFiles(t, dir, "x")
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
