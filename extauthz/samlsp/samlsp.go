// Package samlsp is our SAML 2.0 service provider, built on
// github.com/crewjam/saml: SP metadata, SP-initiated login (HTTP-Redirect
// binding) with a same-site RelayState, and an assertion consumer that turns
// a signed IdP response into an Identity.
//
// ParseResponse accepts only the HTTP-POST binding (no artifact resolution,
// so a login never makes us call the IdP). crewjam/saml checks the XML
// signature (of the Response or of the Assertion, reading only what the
// signature covers, which defeats signature wrapping), the Destination and
// Recipient against the ACS URL, the time window (IssueInstant, NotBefore,
// NotOnOrAfter, with its MaxClockSkew), the Issuer against the IdP metadata,
// the AudienceRestriction against our entity id and InResponseTo against the
// caller's pending request IDs (an unsolicited response only when
// AllowIDPInitiated is set). This package adds the one-time use of each
// assertion ID through a ReplayStore, the attribute and group → role
// mapping, and errors with stable reasons.
//
// Two outcomes matter to callers and are kept apart: ErrInvalidResponse
// (answer 401/403 at the ACS; never create a session) and ErrUnavailable
// (IdP metadata not loaded or the replay store failed: answer 503).
package samlsp

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/crewjam/saml"
	crewsp "github.com/crewjam/saml/samlsp"
	"github.com/jonboulle/clockwork"
	dsig "github.com/russellhaering/goxmldsig"
)

// The two errors callers branch on. Every error ParseResponse returns wraps
// exactly one of them.
var (
	ErrInvalidResponse = errors.New("saml: invalid response")
	ErrUnavailable     = errors.New("saml: service provider unavailable")
	// ErrBadRelayState is returned by LoginRedirect for a RelayState that is
	// not a same-site relative path.
	ErrBadRelayState = errors.New("saml: relay state must be a same-site path")
)

// Reason codes carried by *Error: stable, for audit logs and metric labels.
// Clients only learn the Kind.
const (
	ReasonMalformed        = "malformed"
	ReasonBadSignature     = "bad_signature"
	ReasonUnsigned         = "unsigned"
	ReasonUntrustedCert    = "untrusted_certificate"
	ReasonWrongAudience    = "wrong_audience"
	ReasonWrongDestination = "wrong_destination"
	ReasonWrongIssuer      = "wrong_issuer"
	ReasonExpired          = "expired"
	ReasonNotYetValid      = "not_yet_valid"
	ReasonInResponseTo     = "in_response_to"
	ReasonReplayed         = "replayed"
	ReasonIdPStatus        = "idp_status"
	ReasonMissingElement   = "missing_element"
	ReasonUnsupported      = "unsupported"
	ReasonNoSubject        = "no_subject"
	ReasonInvalid          = "invalid"
	ReasonNoMetadata       = "no_idp_metadata"
	ReasonReplayStore      = "replay_store"
	ReasonCancelled        = "cancelled"
)

// Error is a failed login. Error() prints only the Kind (the cause may hold
// details of the assertion); Reason and Err are for the audit log.
type Error struct {
	Kind   error // ErrInvalidResponse or ErrUnavailable
	Reason string
	Err    error
}

func (e *Error) Error() string { return e.Kind.Error() + ": " + e.Reason }

// Unwrap lets errors.Is match the Kind.
func (e *Error) Unwrap() error { return e.Kind }

// Reason returns the audit reason of err ("" when it is not an *Error).
func Reason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func invalid(reason string, cause error) error {
	return &Error{Kind: ErrInvalidResponse, Reason: reason, Err: cause}
}

func unavailable(reason string, cause error) error {
	return &Error{Kind: ErrUnavailable, Reason: reason, Err: cause}
}

// Claims URIs of the WS-Federation / ADFS / Entra ID claim types: the default
// attribute names.
const (
	ClaimEmail      = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"
	ClaimName       = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
	ClaimGivenName  = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname"
	ClaimSurname    = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname"
	ClaimGroups     = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"
	ClaimDepartment = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/department"
)

// Attributes names the SAML attributes (by Name or FriendlyName) read into
// an Identity. Empty fields take the defaults of DefaultAttributes.
type Attributes struct {
	Email       string
	DisplayName string
	GivenName   string
	FamilyName  string
	// Groups is the multi-valued attribute listing the user's groups.
	Groups string
	// Extra maps policy attribute names (department, clearance, location,
	// ...) to SAML attribute names; the first value is used.
	Extra map[string]string
}

// DefaultAttributes are the claims URIs ADFS and Entra ID send.
var DefaultAttributes = Attributes{
	Email: ClaimEmail, DisplayName: ClaimName, GivenName: ClaimGivenName,
	FamilyName: ClaimSurname, Groups: ClaimGroups,
	Extra: map[string]string{"department": ClaimDepartment},
}

func withDefaults(a Attributes) Attributes {
	d := DefaultAttributes
	if a.Email != "" {
		d.Email = a.Email
	}
	if a.DisplayName != "" {
		d.DisplayName = a.DisplayName
	}
	if a.GivenName != "" {
		d.GivenName = a.GivenName
	}
	if a.FamilyName != "" {
		d.FamilyName = a.FamilyName
	}
	if a.Groups != "" {
		d.Groups = a.Groups
	}
	if a.Extra != nil {
		d.Extra = a.Extra
	}
	return d
}

// Config describes our SP and the one IdP it trusts.
type Config struct {
	// EntityID is our SP entity id (the audience the IdP must name).
	EntityID string
	// ACSURL is the absolute URL of POST /auth/saml/acs as the browser
	// reaches it (Destination and Recipient must equal it).
	ACSURL string
	// MetadataURL is the absolute URL of GET /auth/saml/metadata (optional).
	MetadataURL string
	// KeyFile and CertFile are our PEM key pair: it signs AuthnRequests and
	// (RSA only) decrypts encrypted assertions.
	KeyFile  string
	CertFile string
	// Exactly one of IDPMetadataFile and IDPMetadataURL.
	IDPMetadataFile string
	IDPMetadataURL  string
	// AllowIDPInitiated accepts unsolicited responses (no InResponseTo).
	AllowIDPInitiated bool
	// AllowSHA1 accepts IdP signatures made with SHA-1 (refused by default).
	AllowSHA1 bool
	// Attributes maps identity fields to SAML attributes.
	Attributes Attributes
	// GroupRoles maps a group (as the IdP sends it, compared exactly) to a
	// role. Groups without an entry give no role.
	GroupRoles map[string]string
	// MetadataTimeout bounds fetching IDPMetadataURL (default 10s);
	// MetadataRetry is the least time between two fetch attempts while the
	// metadata is missing (default 10s).
	MetadataTimeout time.Duration
	MetadataRetry   time.Duration
}

// Identity is a user the IdP vouched for.
type Identity struct {
	// Subject is the NameID value; NameIDFormat its format.
	Subject      string
	NameIDFormat string
	// Issuer is the IdP entity id; SessionIndex its session (for logout).
	Issuer       string
	SessionIndex string
	Email        string
	DisplayName  string
	GivenName    string
	FamilyName   string
	// Groups as the IdP sent them; Roles mapped, sorted, without duplicates.
	Groups []string
	Roles  []string
	// Extra holds the mapped Attributes.Extra values (department, ...).
	Extra map[string]string
	// Raw is every attribute of the assertion by Name, with all values.
	Raw map[string][]string
	// SessionNotOnOrAfter is the IdP's limit on our session (zero: none).
	SessionNotOnOrAfter time.Time
}

// Attributes returns the non-empty policy attributes (for
// input.identity.attributes), as ldapauth.Identity.Attributes does.
func (id *Identity) Attributes() map[string]string {
	m := map[string]string{}
	for k, v := range id.Extra {
		if v != "" {
			m[k] = v
		}
	}
	for k, v := range map[string]string{
		"email": id.Email, "name": id.DisplayName, "given_name": id.GivenName, "family_name": id.FamilyName,
	} {
		if v != "" {
			m[k] = v
		}
	}
	return m
}

// Option tunes a ServiceProvider.
type Option func(*ServiceProvider)

// WithReplayStore sets where used assertion IDs are kept (default: a
// MemoryReplayStore; use a shared store when replicas share the ACS).
func WithReplayStore(s ReplayStore) Option { return func(p *ServiceProvider) { p.replay = s } }

// WithHTTPClient sets the client that fetches IdP metadata.
func WithHTTPClient(c *http.Client) Option { return func(p *ServiceProvider) { p.client = c } }

// WithClock sets the clock (tests). It drives crewjam/saml's time checks,
// certificate validity and the replay store's expiry.
func WithClock(now func() time.Time) Option {
	return func(p *ServiceProvider) { p.now, p.fakeClock = now, true }
}

// nowClock is a clockwork.Clock whose Now is ours (for WithClock).
type nowClock struct {
	clockwork.Clock
	now func() time.Time
}

func (c nowClock) Now() time.Time                  { return c.now() }
func (c nowClock) Since(t time.Time) time.Duration { return c.now().Sub(t) }
func (c nowClock) Until(t time.Time) time.Duration { return t.Sub(c.now()) }

// ServiceProvider is safe for concurrent use.
type ServiceProvider struct {
	cfg    Config
	attrs  Attributes
	key    crypto.Signer
	cert   *x509.Certificate
	acs    url.URL
	meta   url.URL
	replay ReplayStore
	client *http.Client
	now    func() time.Time
	// fakeClock: now was set by WithClock and drives crewjam/saml too.
	fakeClock bool

	mu        sync.Mutex // guards sp and lastFetch
	sp        *saml.ServiceProvider
	lastFetch time.Time
}

// New validates cfg, reads the key pair and the IdP metadata. IdP metadata
// from a URL that cannot be fetched now is not fatal: it is fetched again
// (at most every MetadataRetry) on use, which fails with ErrUnavailable
// until it succeeds.
func New(ctx context.Context, cfg Config, opts ...Option) (*ServiceProvider, error) {
	if cfg.EntityID == "" {
		return nil, errors.New("saml: entity_id is required")
	}
	acs, err := url.Parse(cfg.ACSURL)
	if err != nil || acs.Scheme == "" || acs.Host == "" {
		return nil, fmt.Errorf("saml: acs_url %q: must be an absolute URL", cfg.ACSURL)
	}
	p := &ServiceProvider{cfg: cfg, attrs: withDefaults(cfg.Attributes), acs: *acs, now: time.Now}
	if cfg.MetadataURL != "" {
		m, err := url.Parse(cfg.MetadataURL)
		if err != nil || m.Scheme == "" || m.Host == "" {
			return nil, fmt.Errorf("saml: metadata_url %q: must be an absolute URL", cfg.MetadataURL)
		}
		p.meta = *m
	}
	if (cfg.IDPMetadataFile == "") == (cfg.IDPMetadataURL == "") {
		return nil, errors.New("saml: exactly one of idp_metadata_file and idp_metadata_url is required")
	}
	if cfg.IDPMetadataURL != "" {
		u, err := url.Parse(cfg.IDPMetadataURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("saml: idp_metadata_url %q: must be an http(s) URL", cfg.IDPMetadataURL)
		}
	}
	if p.cfg.MetadataTimeout <= 0 {
		p.cfg.MetadataTimeout = 10 * time.Second
	}
	if p.cfg.MetadataRetry <= 0 {
		p.cfg.MetadataRetry = 10 * time.Second
	}
	if p.key, p.cert, err = loadKeyPair(cfg.KeyFile, cfg.CertFile); err != nil {
		return nil, err
	}
	for _, o := range opts {
		o(p)
	}
	if p.replay == nil {
		p.replay = NewMemoryReplayStore(0)
	}
	if p.client == nil {
		p.client = &http.Client{Timeout: p.cfg.MetadataTimeout}
	}
	if cfg.IDPMetadataFile != "" {
		b, err := os.ReadFile(cfg.IDPMetadataFile)
		if err != nil {
			return nil, fmt.Errorf("saml: idp_metadata_file: %w", err)
		}
		ed, err := crewsp.ParseMetadata(b)
		if err != nil {
			return nil, fmt.Errorf("saml: idp_metadata_file %s: %w", cfg.IDPMetadataFile, err)
		}
		p.sp = p.build(ed)
		return p, nil
	}
	_, _ = p.current(ctx) // a failure is retried on use
	return p, nil
}

func loadKeyPair(keyFile, certFile string) (crypto.Signer, *x509.Certificate, error) {
	if keyFile == "" || certFile == "" {
		return nil, nil, errors.New("saml: key_file and cert_file are required")
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("saml: key_file: %w", err)
	}
	block, _ := pem.Decode(kb)
	if block == nil {
		return nil, nil, fmt.Errorf("saml: key_file %s: no PEM block", keyFile)
	}
	var key any
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("saml: key_file %s: %w", keyFile, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("saml: key_file %s: not a signing key", keyFile)
	}
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("saml: cert_file: %w", err)
	}
	cblock, _ := pem.Decode(cb)
	if cblock == nil || cblock.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("saml: cert_file %s: no CERTIFICATE PEM block", certFile)
	}
	cert, err := x509.ParseCertificate(cblock.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("saml: cert_file %s: %w", certFile, err)
	}
	if !publicKeysEqual(signer.Public(), cert.PublicKey) {
		return nil, nil, errors.New("saml: key_file and cert_file do not match")
	}
	return signer, cert, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// build makes the crewjam ServiceProvider for one IdP metadata. It is never
// modified afterwards: a metadata refresh builds a new one.
func (p *ServiceProvider) build(idp *saml.EntityDescriptor) *saml.ServiceProvider {
	sp := &saml.ServiceProvider{
		EntityID:                         p.cfg.EntityID,
		Key:                              p.key,
		Certificate:                      p.cert,
		MetadataURL:                      p.meta,
		AcsURL:                           p.acs,
		IDPMetadata:                      idp,
		AllowIDPInitiated:                p.cfg.AllowIDPInitiated,
		AssertionConsumerServiceBindings: []string{saml.HTTPPostBinding},
		RejectSHA1Signatures:             !p.cfg.AllowSHA1,
		LimitRelayStateLength:            true,
		AuthnNameIDFormat:                saml.UnspecifiedNameIDFormat,
	}
	if p.fakeClock {
		sp.Clock = dsig.NewFakeClock(nowClock{Clock: clockwork.NewRealClock(), now: p.now})
	}
	switch p.key.Public().(type) {
	case interface{ Size() int }: // *rsa.PublicKey
		sp.SignatureMethod = dsig.RSASHA256SignatureMethod
	default:
		sp.SignatureMethod = dsig.ECDSASHA256SignatureMethod
	}
	return sp
}

// current returns the SP, fetching the IdP metadata if it is missing (at
// most every MetadataRetry).
func (p *ServiceProvider) current(ctx context.Context) (*saml.ServiceProvider, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sp != nil {
		return p.sp, nil
	}
	now := p.now()
	if !p.lastFetch.IsZero() && now.Sub(p.lastFetch) < p.cfg.MetadataRetry {
		return nil, unavailable(ReasonNoMetadata, errors.New("idp metadata not loaded yet"))
	}
	p.lastFetch = now
	ed, err := p.fetch(ctx)
	if err != nil {
		return nil, unavailable(ReasonNoMetadata, err)
	}
	p.sp = p.build(ed)
	return p.sp, nil
}

func (p *ServiceProvider) fetch(ctx context.Context) (*saml.EntityDescriptor, error) {
	u, err := url.Parse(p.cfg.IDPMetadataURL)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.MetadataTimeout)
	defer cancel()
	ed, err := crewsp.FetchMetadata(ctx, p.client, *u)
	if err != nil {
		return nil, fmt.Errorf("idp metadata %s: %w", p.cfg.IDPMetadataURL, err)
	}
	return ed, nil
}

// RefreshMetadata fetches the IdP metadata URL again and, on success, swaps
// it in (the old one keeps serving on failure). It does nothing for a file.
func (p *ServiceProvider) RefreshMetadata(ctx context.Context) error {
	if p.cfg.IDPMetadataURL == "" {
		return nil
	}
	ed, err := p.fetch(ctx)
	if err != nil {
		return unavailable(ReasonNoMetadata, err)
	}
	sp := p.build(ed)
	p.mu.Lock()
	p.sp = sp
	p.mu.Unlock()
	return nil
}

// Metadata returns our SP metadata document.
func (p *ServiceProvider) Metadata() ([]byte, error) {
	// Our metadata does not depend on the IdP's.
	sp := p.build(&saml.EntityDescriptor{})
	b, err := xml.MarshalIndent(sp.Metadata(), "", "  ")
	if err != nil {
		return nil, err
	}
	return append([]byte(xml.Header), b...), nil
}

// LoginRedirect starts an SP-initiated login: it returns the IdP URL to
// redirect the browser to and the AuthnRequest ID, which the caller keeps
// (e.g. in a short-lived signed, HttpOnly cookie) and passes back to
// ParseResponse. relayState must be a same-site path ("" means "/").
func (p *ServiceProvider) LoginRedirect(ctx context.Context, relayState string) (redirectURL, requestID string, err error) {
	if relayState == "" {
		relayState = "/"
	}
	if !SafeRelayState(relayState) {
		return "", "", ErrBadRelayState
	}
	sp, err := p.current(ctx)
	if err != nil {
		return "", "", err
	}
	loc := sp.GetSSOBindingLocation(saml.HTTPRedirectBinding)
	if loc == "" {
		return "", "", unavailable(ReasonNoMetadata, errors.New("idp metadata has no HTTP-Redirect SingleSignOnService"))
	}
	req, err := sp.MakeAuthenticationRequest(loc, saml.HTTPRedirectBinding, saml.HTTPPostBinding)
	if err != nil {
		return "", "", err
	}
	u, err := req.Redirect(relayState, sp)
	if err != nil {
		return "", "", err
	}
	return u.String(), req.ID, nil
}

// maxRelayState is the SAML bindings' limit (saml-bindings §3.4.3).
const maxRelayState = 80

// SafeRelayState reports whether s is a same-site relative path that is
// safe to redirect to: it starts with a single "/", has no backslash, no
// whitespace, control or non-ASCII characters (browsers drop or rewrite
// them; encode them as %XX), no encoded leading slash or backslash, no
// scheme, host or user info, and at most 80 bytes. Use it again on the
// RelayState that comes back to the ACS: an attacker can post any value.
func SafeRelayState(s string) bool {
	if s == "" || len(s) > maxRelayState || s[0] != '/' {
		return false
	}
	if len(s) > 1 && (s[1] == '/' || s[1] == '\\') {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || r == '\\' || r > 0x7e {
			return false
		}
	}
	low := strings.ToLower(s)
	// Encoded slashes and backslashes may be decoded by something on the way.
	if strings.HasPrefix(low, "/%2f") || strings.HasPrefix(low, "/%5c") || strings.Contains(low, "%5c") {
		return false
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return false
	}
	return strings.HasPrefix(u.Path, "/") && !strings.HasPrefix(u.Path, "//")
}

// maxBody bounds the ACS form (a SAMLResponse is a few tens of KB).
const maxBody = 1 << 20

// ParseResponse checks the IdP's HTTP-POST response in r (POST
// /auth/saml/acs) and returns who logged in. possibleRequestIDs are the IDs
// of the caller's pending AuthnRequests (from LoginRedirect); empty is only
// accepted with AllowIDPInitiated. Each assertion is accepted once.
func (p *ServiceProvider) ParseResponse(ctx context.Context, r *http.Request, possibleRequestIDs []string) (*Identity, error) {
	if r.Method != http.MethodPost {
		return nil, invalid(ReasonUnsupported, fmt.Errorf("method %s", r.Method))
	}
	if r.ContentLength > maxBody {
		return nil, invalid(ReasonMalformed, errors.New("body too large"))
	}
	if r.Body != nil {
		r.Body = http.MaxBytesReader(nil, r.Body, maxBody)
	}
	if err := r.ParseForm(); err != nil {
		return nil, invalid(ReasonMalformed, err)
	}
	if r.Form.Has("SAMLart") {
		return nil, invalid(ReasonUnsupported, errors.New("artifact binding is not accepted"))
	}
	if r.PostForm.Get("SAMLResponse") == "" {
		return nil, invalid(ReasonMalformed, errors.New("no SAMLResponse"))
	}
	sp, err := p.current(ctx)
	if err != nil {
		return nil, err
	}
	ids := slices.DeleteFunc(slices.Clone(possibleRequestIDs), func(s string) bool { return s == "" })
	assertion, err := sp.ParseResponse(r, ids)
	if err != nil {
		// Keep only the diagnostic text: InvalidResponseError also holds the
		// whole response XML (personal data), which must not reach logs.
		return nil, invalid(classify(err), errors.New(privateError(err)))
	}
	if err := ctx.Err(); err != nil {
		return nil, unavailable(ReasonCancelled, err)
	}
	// Every assertion crewjam/saml accepts has IssueInstant + MaxIssueDelay
	// as its last acceptable moment, so its ID need not be kept longer.
	until := assertion.IssueInstant.Add(saml.MaxIssueDelay + saml.MaxClockSkew)
	if assertion.ID == "" {
		return nil, invalid(ReasonMissingElement, errors.New("assertion has no ID"))
	}
	switch err := p.replay.Consume(ctx, assertion.Issuer.Value+" "+assertion.ID, until); {
	case errors.Is(err, ErrReplayed):
		return nil, invalid(ReasonReplayed, fmt.Errorf("assertion %q", assertion.ID))
	case err != nil:
		return nil, unavailable(ReasonReplayStore, err)
	}
	return p.identity(assertion)
}

// classify maps a crewjam/saml error to a Reason.
func classify(err error) string {
	var bad saml.ErrBadStatus
	switch {
	case errors.As(err, &bad):
		return ReasonIdPStatus
	case errors.Is(err, saml.ErrUntrustedCertificate), errors.Is(err, saml.ErrCertificateNotValidNow):
		return ReasonUntrustedCert
	case errors.Is(err, saml.ErrInvalidSignature):
		return ReasonBadSignature
	case errors.Is(err, saml.ErrAudienceMismatch):
		return ReasonWrongAudience
	case errors.Is(err, saml.ErrDestinationMismatch):
		return ReasonWrongDestination
	case errors.Is(err, saml.ErrIssuerMismatch):
		return ReasonWrongIssuer
	case errors.Is(err, saml.ErrRequestIDMismatch):
		return ReasonInResponseTo
	case errors.Is(err, saml.ErrExpired):
		return ReasonExpired
	case errors.Is(err, saml.ErrNotYetValid):
		return ReasonNotYetValid
	case errors.Is(err, saml.ErrAssertionReplayed):
		return ReasonReplayed
	case errors.Is(err, saml.ErrMalformedMessage):
		return ReasonMalformed
	case errors.Is(err, saml.ErrMissingElement):
		return ReasonMissingElement
	case errors.Is(err, saml.ErrUnsupported):
		return ReasonUnsupported
	case strings.Contains(privateError(err), "signature element not present"):
		// crewjam/saml has no exported error for a missing signature.
		return ReasonUnsigned
	}
	return ReasonInvalid
}

// privateError is the diagnostic text crewjam/saml hides behind the static
// "Authentication failed" of InvalidResponseError.
func privateError(err error) string {
	var ire *saml.InvalidResponseError
	if errors.As(err, &ire) && ire.PrivateErr != nil {
		return ire.PrivateErr.Error()
	}
	return err.Error()
}

func (p *ServiceProvider) identity(a *saml.Assertion) (*Identity, error) {
	if a.Subject == nil || a.Subject.NameID == nil || strings.TrimSpace(a.Subject.NameID.Value) == "" {
		return nil, invalid(ReasonNoSubject, errors.New("assertion has no NameID"))
	}
	id := &Identity{
		Subject:      strings.TrimSpace(a.Subject.NameID.Value),
		NameIDFormat: a.Subject.NameID.Format,
		Issuer:       a.Issuer.Value,
		Raw:          map[string][]string{},
		Extra:        map[string]string{},
		Groups:       []string{},
		Roles:        []string{},
	}
	for _, st := range a.AuthnStatements {
		if id.SessionIndex == "" {
			id.SessionIndex = st.SessionIndex
		}
		if st.SessionNotOnOrAfter != nil && (id.SessionNotOnOrAfter.IsZero() || st.SessionNotOnOrAfter.Before(id.SessionNotOnOrAfter)) {
			id.SessionNotOnOrAfter = *st.SessionNotOnOrAfter
		}
	}
	byFriendly := map[string][]string{}
	for _, st := range a.AttributeStatements {
		for _, at := range st.Attributes {
			var vals []string
			for _, v := range at.Values {
				if s := strings.TrimSpace(v.Value); s != "" && !v.Nil {
					vals = append(vals, s)
				}
			}
			id.Raw[at.Name] = append(id.Raw[at.Name], vals...)
			if at.FriendlyName != "" {
				byFriendly[at.FriendlyName] = append(byFriendly[at.FriendlyName], vals...)
			}
		}
	}
	get := func(name string) []string {
		if name == "" {
			return nil
		}
		if v, ok := id.Raw[name]; ok {
			return v
		}
		return byFriendly[name]
	}
	first := func(name string) string {
		if v := get(name); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	id.Email = first(p.attrs.Email)
	id.DisplayName = first(p.attrs.DisplayName)
	id.GivenName = first(p.attrs.GivenName)
	id.FamilyName = first(p.attrs.FamilyName)
	for k, name := range p.attrs.Extra {
		if v := first(name); v != "" {
			id.Extra[k] = v
		}
	}
	groups := slices.Clone(get(p.attrs.Groups))
	slices.Sort(groups)
	id.Groups = slices.Compact(groups)
	if id.Groups == nil {
		id.Groups = []string{}
	}
	for _, g := range id.Groups {
		if role, ok := p.cfg.GroupRoles[g]; ok && role != "" {
			id.Roles = append(id.Roles, role)
		}
	}
	slices.Sort(id.Roles)
	id.Roles = slices.Compact(id.Roles)
	return id, nil
}
