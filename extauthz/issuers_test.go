package extauthz

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/internal/wire"
)

// testOIDC is an IdP with discovery and a JWKS whose keys the test swaps.
type testOIDC struct {
	*httptest.Server
	mu        sync.Mutex
	keys      []jwk.Key
	jwksHits  atomic.Int32
	discovery atomic.Int32
}

func newTestOIDC(t *testing.T, keys ...jwk.Key) *testOIDC {
	t.Helper()
	idp := &testOIDC{keys: keys}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		idp.discovery.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": idp.URL, "jwks_uri": idp.URL + "/keys"})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		idp.jwksHits.Add(1)
		idp.mu.Lock()
		keys := idp.keys
		idp.mu.Unlock()
		testenv.WriteJWKS(t, w, keys)
	})
	idp.Server = httptest.NewServer(mux)
	t.Cleanup(idp.Close)
	return idp
}

func (idp *testOIDC) setKeys(keys ...jwk.Key) {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	idp.keys = keys
}

func unauthReason(t *testing.T, resp *authv3.CheckResponse) string {
	t.Helper()
	d := resp.GetDeniedResponse()
	if d.GetStatus().GetCode() != 401 {
		return ""
	}
	var body struct{ Reason string }
	if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil {
		t.Fatal(err)
	}
	return body.Reason
}

func TestOIDCIssuers(t *testing.T) {
	k1, k2 := otherKey(t, "k1"), otherKey(t, "k2")
	idp := newTestOIDC(t, k1)
	cfg := testConfig(t)
	iss := config.OIDCIssuer{Issuer: idp.URL, Audiences: []string{"api"}, MinRefetch: 50 * time.Millisecond}
	cfg.Tenants[0].Issuers = []config.OIDCIssuer{iss} // acme: legacy jwt and the IdP
	cfg.Tenants[1].JWT = config.JWT{}                 // globex: only the IdP
	cfg.Tenants[1].Issuers = []config.OIDCIssuer{iss}
	cfg.SetDefaults()
	r := startServer(t, cfg)
	ctx := t.Context()
	idpToken := func(key jwk.Key, tenant string) string {
		return mint(t, key, claims(func(c *devtoken.Claims) {
			c.Issuer, c.Audience, c.Tenant, c.Subject = idp.URL, []string{"api"}, tenant, "olga"
		}))
	}
	check := func(tenant, token string) *authv3.CheckResponse {
		t.Helper()
		resp, err := r.client.Check(ctx, checkReq(tenant, "GET", "/v1/workflows", token, nil))
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		return resp
	}
	user := func(resp *authv3.CheckResponse) string {
		t.Helper()
		ok := resp.GetOkResponse()
		if ok == nil {
			t.Fatalf("not allowed: %v", resp)
		}
		return headerMap(t, ok.GetHeaders())[wire.HeaderUser]
	}

	// The keys are fetched in the background at start-up.
	deadline := time.Now().Add(5 * time.Second)
	for !r.srv.snap.Load().issuers[oidcConfig(cfg.Tenants[0].Issuers[0])].keys.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("issuer keys never fetched")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if idp.discovery.Load() == 0 {
		t.Fatal("discovery was not used")
	}
	if len(r.srv.snap.Load().issuers) != 1 {
		t.Fatal("two tenants trusting the same issuer should share its keys")
	}

	t.Run("issuer token accepted, legacy jwt still accepted", func(t *testing.T) {
		if u := user(check("acme", idpToken(k1, "acme"))); u != "olga" {
			t.Fatalf("user %q", u)
		}
		if u := user(check("acme", mint(t, devKey(t), claims(nil)))); u != "alice" {
			t.Fatalf("legacy user %q", u)
		}
		if u := user(check("globex", idpToken(k1, "globex"))); u != "olga" {
			t.Fatalf("issuers-only tenant: user %q", u)
		}
	})
	t.Run("rejections keep their reasons", func(t *testing.T) {
		evil := mint(t, k1, claims(func(c *devtoken.Claims) { c.Issuer, c.Audience = "https://evil.example", []string{"api"} }))
		for name, tc := range map[string]struct{ tenant, token, reason string }{
			"unknown issuer":        {"acme", evil, string(envoyauth.ReasonWrongIssuer)},
			"missing token":         {"acme", "", string(envoyauth.ReasonMissingToken)},
			"garbage":               {"acme", "not-a-jwt", string(envoyauth.ReasonMalformed)},
			"wrong audience":        {"acme", mint(t, k1, claims(func(c *devtoken.Claims) { c.Issuer = idp.URL })), string(envoyauth.ReasonWrongAudience)},
			"other tenant's token":  {"acme", idpToken(k1, "globex"), string(envoyauth.ReasonWrongTenant)},
			"legacy issuer, no jwt": {"globex", mint(t, devKey(t), claims(func(c *devtoken.Claims) { c.Tenant = "globex" })), string(envoyauth.ReasonWrongIssuer)},
			"signed by a stranger":  {"acme", idpToken(otherKey(t, "k1"), "acme"), string(envoyauth.ReasonBadSignature)},
		} {
			if got := unauthReason(t, check(tc.tenant, tc.token)); got != tc.reason {
				t.Errorf("%s: reason %q, want %q", name, got, tc.reason)
			}
		}
	})
	t.Run("key rotation: an unknown kid refetches the JWKS", func(t *testing.T) {
		idp.setKeys(k1, k2)
		before := idp.jwksHits.Load()
		time.Sleep(60 * time.Millisecond) // past min_refetch
		if u := user(check("acme", idpToken(k2, "acme"))); u != "olga" {
			t.Fatalf("user %q", u)
		}
		if idp.jwksHits.Load() == before {
			t.Fatal("no refetch")
		}
		// A flood of unknown kids is rate limited: at most one refetch per
		// min_refetch (50ms) however many arrive, measured against the
		// time the flood took on this machine.
		stranger := idpToken(otherKey(t, "k-random"), "acme")
		hits := idp.jwksHits.Load()
		start := time.Now()
		for range 20 {
			if got := unauthReason(t, check("acme", stranger)); got != string(envoyauth.ReasonUnknownKID) {
				t.Fatalf("reason %q", got)
			}
		}
		allowed := 1 + int32(time.Since(start)/(50*time.Millisecond))
		if n := idp.jwksHits.Load() - hits; n > allowed || allowed >= 20 {
			t.Fatalf("%d refetches for 20 unknown kids in %s (at most %d allowed; a flood must be limited)", n, time.Since(start), allowed)
		}
	})
	t.Run("reload keeps the issuer's keys; removal stops them", func(t *testing.T) {
		keysBefore := r.srv.snap.Load().issuers[oidcConfig(iss)]
		if err := r.srv.Update(cfg); err != nil {
			t.Fatal(err)
		}
		if got := r.srv.snap.Load().issuers[oidcConfig(iss)]; got != keysBefore {
			t.Fatal("unchanged issuer got new keys on reload")
		}
		plain := testConfig(t)
		if err := r.srv.Update(plain); err != nil {
			t.Fatal(err)
		}
		r.srv.issuers.mu.Lock()
		n := len(r.srv.issuers.running)
		r.srv.issuers.mu.Unlock()
		if n != 0 {
			t.Fatalf("%d issuers still running", n)
		}
		// acme's plain jwt verifier does not hold the IdP's kid.
		if got := unauthReason(t, check("acme", idpToken(k1, "acme"))); got != string(envoyauth.ReasonUnknownKID) {
			t.Fatalf("removed issuer: reason %q", got)
		}
	})
}

func TestOIDCIssuerDownIs503(t *testing.T) {
	idp := newTestOIDC(t, otherKey(t, "k1"))
	url := idp.URL
	idp.Close()
	cfg := testConfig(t)
	cfg.Tenants[0].Issuers = []config.OIDCIssuer{{Issuer: url, Audiences: []string{"api"}}}
	cfg.SetDefaults()
	r := startServer(t, cfg) // start-up does not fail
	tok := mint(t, otherKey(t, "k1"), claims(func(c *devtoken.Claims) { c.Issuer, c.Audience = url, []string{"api"} }))
	_, err := r.client.Check(t.Context(), checkReq("acme", "GET", "/v1/workflows", tok, nil))
	if err == nil || !strings.Contains(err.Error(), "Unavailable") {
		t.Fatalf("want Unavailable (503), got %v", err)
	}
}
