package login

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/samltest"
	"github.com/kailash-gw/kailash/internal/wire"
)

// samlLimits is one authz server (in memory) with two SAML tenants on one
// IdP: acme (few pending requests allowed) and globex (few starts per
// minute and address).
type samlLimits struct {
	srv   *Service
	mux   *http.ServeMux
	idp   *samltest.IdP
	clock *replicaClock
}

func startSAMLLimits(t *testing.T, acmeMax, globexRate int) *samlLimits {
	t.Helper()
	dir := t.TempDir()
	idp := samltest.NewIdP(t, replicaIdPEntity, replicaIdPSSO)
	keyFile, certFile := samltest.NewKeyPair(t, "kailash-sp").WriteFiles(t, dir, "sp")
	mdFile := idp.WriteMetadata(t, dir)
	cfg := testConfig(t)
	for i := range cfg.Tenants {
		tn := &cfg.Tenants[i]
		tn.SAML = &config.SAML{EntityID: "https://" + tn.ID + ".localhost/auth/saml/metadata", ACSURL: config.MustURL("https://" + tn.ID + ".localhost/auth/saml/acs"),
			KeyFile: keyFile, CertFile: certFile, IDPMetadataFile: mdFile}
	}
	cfg.Tenants[0].Login.SAMLMaxPending = acmeMax
	cfg.Tenants[1].Login.SAMLStartsPerMinute = globexRate
	clock := &replicaClock{}
	srv, err := New(cfg, Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	mux := http.NewServeMux()
	srv.Routes(mux)
	return &samlLimits{srv: srv, mux: mux, idp: idp, clock: clock}
}

// start begins a SAML login of tenant from addr.
func (s *samlLimits) start(tenant, addr string) *http.Response {
	req := httptest.NewRequest("GET", "/auth/saml/login?return_to=%2F", nil)
	req.Header.Set(wire.HeaderTenant, tenant)
	req.Header.Set("X-Forwarded-For", addr)
	rec := httptest.NewRecorder()
	s.mux.ServeHTTP(rec, req)
	return rec.Result()
}

func (s *samlLimits) acs(t *testing.T, tenant string, started *http.Response) *http.Response {
	t.Helper()
	loc, err := url.Parse(started.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	authn := samltest.AuthnRequest(t, loc)
	acsURL := "https://" + tenant + ".localhost/auth/saml/acs"
	doc := s.idp.ResponseXML(t, samltest.Response{
		AssertionID: "_a-" + authn.ID, InResponseTo: authn.ID, IssueInstant: s.clock.Now().UTC(),
		NameID: "alice@example.com", Audience: "https://" + tenant + ".localhost/auth/saml/metadata", Destination: acsURL,
	})
	req := httptest.NewRequest("POST", acsURL, strings.NewReader(samltest.PostForm(doc, "/").Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(wire.HeaderTenant, tenant)
	for _, c := range started.Cookies() {
		if c.Name == CookieSAMLRequest {
			req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
		}
	}
	rec := httptest.NewRecorder()
	s.mux.ServeHTTP(rec, req)
	return rec.Result()
}

func body(r *http.Response) string { b, _ := io.ReadAll(r.Body); return string(b) }

// A tenant flooding login starts (from many addresses, past any per-address
// limit) fills only its own share of the pending requests: another
// tenant's login started before the flood still completes, and its new
// logins still start.
func TestSAMLFloodCannotPushOutAnotherTenant(t *testing.T) {
	const max = 20
	s := startSAMLLimits(t, max, 0)
	victim := s.start("globex", "192.0.2.1")
	if victim.StatusCode != http.StatusFound {
		t.Fatalf("globex start: %d %s", victim.StatusCode, body(victim))
	}
	refused := 0
	for i := range 3 * max {
		r := s.start("acme", fmt.Sprintf("198.51.100.%d", i%250))
		switch r.StatusCode {
		case http.StatusFound:
		case http.StatusServiceUnavailable:
			if !strings.Contains(body(r), "too_many_pending_logins") {
				t.Fatalf("flood refusal: %s", body(r))
			}
			refused++
		default:
			t.Fatalf("flood start %d: %d %s", i, r.StatusCode, body(r))
		}
	}
	if refused != 2*max {
		t.Fatalf("flood: %d refused, want %d", refused, 2*max)
	}
	if r := s.start("globex", "192.0.2.2"); r.StatusCode != http.StatusFound {
		t.Fatalf("globex start during acme's flood: %d %s", r.StatusCode, body(r))
	}
	if r := s.acs(t, "globex", victim); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("globex's pending login after acme's flood: %d %s", r.StatusCode, body(r))
	}
}

// Login starts are rate-limited per client address and tenant: 429 with
// Retry-After past the limit, while another address, and the same address
// on another tenant, still start; the next window starts afresh.
func TestSAMLStartsRateLimited(t *testing.T) {
	const rate = 3
	s := startSAMLLimits(t, 0, rate)
	for i := range rate {
		if r := s.start("globex", "203.0.113.7"); r.StatusCode != http.StatusFound {
			t.Fatalf("start %d: %d %s", i+1, r.StatusCode, body(r))
		}
	}
	r := s.start("globex", "203.0.113.7")
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" || !strings.Contains(body(r), "rate_limited") {
		t.Fatalf("start past the limit: %d %v", r.StatusCode, r.Header)
	}
	if r := s.start("globex", "203.0.113.8"); r.StatusCode != http.StatusFound {
		t.Fatalf("another address: %d %s", r.StatusCode, body(r))
	}
	if r := s.start("acme", "203.0.113.7"); r.StatusCode != http.StatusFound {
		t.Fatalf("the same address on another tenant: %d %s", r.StatusCode, body(r))
	}
	s.clock.Add(time.Minute + time.Second)
	if r := s.start("globex", "203.0.113.7"); r.StatusCode != http.StatusFound {
		t.Fatalf("the next window: %d %s", r.StatusCode, body(r))
	}
}
