package extauthz

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// jwksIdP is a JWKS endpoint on 127.0.0.1 that the test takes down (502)
// and brings back, and whose keys it rotates.
type jwksIdP struct {
	*httptest.Server
	down atomic.Bool
	hits atomic.Int32 // every request, up or down

	mu   sync.Mutex
	keys []jwk.Key
}

func newJWKSIdP(t *testing.T, keys ...jwk.Key) *jwksIdP {
	t.Helper()
	idp := &jwksIdP{keys: keys}
	idp.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		idp.hits.Add(1)
		if idp.down.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		idp.mu.Lock()
		keys := idp.keys
		idp.mu.Unlock()
		testenv.WriteJWKS(t, w, keys)
	}))
	t.Cleanup(idp.Close)
	return idp
}

func (idp *jwksIdP) setKeys(keys ...jwk.Key) {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	idp.keys = keys
}

// jwksTenantConfig makes acme a tenant on jwt.jwks_url (globex keeps its
// file), with refresh settings small enough for a test.
func jwksTenantConfig(t *testing.T, url string, kr config.KeyRefresh) *config.Config {
	cfg := testConfig(t)
	cfg.Tenants[0].JWT = config.JWT{Issuer: testIssuer, Audiences: []string{testAudience}, JWKSURL: config.MustURL(url), KeyRefresh: kr}
	cfg.SetDefaults()
	return cfg
}

// startLoggingServer is startServer with the server's log captured.
func startLoggingServer(t *testing.T, cfg *config.Config) (*running, *testenv.LogBuffer) {
	t.Helper()
	logs := &testenv.LogBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(ctx, cfg, Options{Now: fixedClock, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	return serve(t, ctx, cancel, srv), logs
}

// acmeCheck sends one Check for acme with a fresh token signed by key.
func acmeCheck(t *testing.T, r *running, key jwk.Key) (*authv3.CheckResponse, error) {
	t.Helper()
	tok := mint(t, key, claims(nil))
	return r.client.Check(t.Context(), checkReq("acme", "GET", "/v1/workflows", tok, nil))
}

func isUnavailable(err error) bool { return err != nil && strings.Contains(err.Error(), "Unavailable") }

// metricValue sums the series of name whose labels include want.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// Fault: authz (re)started while the tenant's IdP is down stayed at 503
// for the library's 15-minute tick after the IdP came back. Now the source
// retries with backoff (and requests trigger a rate-limited fetch), so it
// recovers within seconds.
func TestJWKSURLRecoversAfterIdPDownAtStart(t *testing.T) {
	k1 := otherKey(t, "k1")
	idp := newJWKSIdP(t, k1)
	idp.down.Store(true)
	cfg := jwksTenantConfig(t, idp.URL+"/keys", config.KeyRefresh{MinRefetch: 200 * time.Millisecond,
		InitialBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	r := startServer(t, cfg) // start-up does not fail
	if _, err := acmeCheck(t, r, k1); !isUnavailable(err) {
		t.Fatalf("IdP down: want Unavailable (503), got %v", err)
	}
	// Down for a while: several failed attempts (background backoff
	// 50ms..500ms), requests answered 503 meanwhile.
	time.Sleep(1500 * time.Millisecond)
	downHits := idp.hits.Load()
	idp.down.Store(false)
	up := time.Now()
	for {
		resp, err := acmeCheck(t, r, k1)
		if err == nil && resp.GetOkResponse() != nil {
			break
		}
		if time.Since(up) > 10*time.Second {
			t.Fatalf("still not serving %s after the IdP came back: %v %v", time.Since(up), err, resp)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("recovered %s after the IdP came back", time.Since(up).Round(time.Millisecond))
	if downHits < 3 {
		t.Errorf("only %d fetch attempts in 1.5s while the IdP was down: no retry", downHits)
	}
	if v := metricValue(t, r.srv.Registry(), "kailash_oidc_jwks_fetches_total", map[string]string{"issuer": testIssuer, "result": "error"}); v < 1 {
		t.Errorf("fetch errors counted: %v", v)
	}
	if v := metricValue(t, r.srv.Registry(), "kailash_oidc_jwks_last_success_timestamp_seconds", map[string]string{"issuer": testIssuer}); v < float64(up.Unix()) {
		t.Errorf("last success timestamp %v, want >= %d", v, up.Unix())
	}
}

// Fault: a new kid on jwt.jwks_url was refused 401 until the next
// scheduled refresh. Now an unknown kid refetches, rate limited per source.
func TestJWKSURLKeyRotation(t *testing.T) {
	const minRefetch = time.Second
	k1, k2 := otherKey(t, "k1"), otherKey(t, "k2")
	idp := newJWKSIdP(t, k1)
	r := startServer(t, jwksTenantConfig(t, idp.URL+"/keys", config.KeyRefresh{MinRefetch: minRefetch}))
	if resp, err := acmeCheck(t, r, k1); err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("k1: %v %v", err, resp)
	}
	idp.setKeys(k1, k2) // the IdP rotates k2 in
	time.Sleep(minRefetch + 100*time.Millisecond)
	before := idp.hits.Load()
	resp, err := acmeCheck(t, r, k2)
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("token with the rotated-in kid: %v, reason %q", err, unauthReason(t, resp))
	}
	if n := idp.hits.Load() - before; n != 1 {
		t.Fatalf("%d fetches for the new kid, want exactly 1", n)
	}

	// A flood of unknown kids, concurrently: at most one fetch per
	// min_refetch (1s), measured against how long the flood took here.
	time.Sleep(minRefetch + 100*time.Millisecond)
	before = idp.hits.Load()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			tok := mint(t, otherKey(t, fmt.Sprintf("random-%d", i)), claims(nil))
			resp, err := r.client.Check(t.Context(), checkReq("acme", "GET", "/v1/workflows", tok, nil))
			if err != nil || unauthReason(t, resp) != string(envoyauth.ReasonUnknownKID) {
				t.Errorf("random kid: %v, reason %q", err, unauthReason(t, resp))
			}
		})
	}
	wg.Wait()
	allowed := 1 + int32(time.Since(start)/minRefetch)
	if n := idp.hits.Load() - before; n > allowed || n < 1 {
		t.Fatalf("%d fetches for 40 unknown kids in %s; want 1..%d", n, time.Since(start), allowed)
	}
	// The old key still verifies.
	if resp, err := acmeCheck(t, r, k1); err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("k1 after the flood: %v %v", err, resp)
	}
}

// Fault: every Check failing for want of keys logged a warning (5,938
// lines in one outage). Now the source logs each state change once, with
// the error, and the Check log is at debug level.
func TestJWKSURLOutageLogsOnce(t *testing.T) {
	k1 := otherKey(t, "k1")
	idp := newJWKSIdP(t, k1)
	idp.down.Store(true)
	cfg := jwksTenantConfig(t, idp.URL+"/keys", config.KeyRefresh{MinRefetch: 20 * time.Millisecond,
		InitialBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	r, logs := startLoggingServer(t, cfg)
	for range 40 {
		if _, err := acmeCheck(t, r, k1); !isUnavailable(err) {
			t.Fatalf("IdP down: want Unavailable, got %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	warns := strings.Count(logs.String(), "level=WARN")
	if warns != 1 {
		t.Fatalf("%d warnings for 40 failing Checks, want exactly 1 (the state change):\n%s", warns, logs.String())
	}
	if !strings.Contains(logs.String(), idp.URL+"/keys") || !strings.Contains(logs.String(), "502") {
		t.Errorf("the warning names neither the URL nor the error:\n%s", logs.String())
	}
	idp.down.Store(false)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "keys fetched again") {
		if time.Now().After(deadline) {
			t.Fatalf("no recovery logged:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if resp, err := acmeCheck(t, r, k1); err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("after recovery: %v %v", err, resp)
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Fatalf("%d warnings in all, want 1", n)
	}
}

// The last good keys keep verifying while the IdP is down (and refreshes
// fail, retried in the background); when it comes back with a new key,
// that key is picked up.
func TestJWKSURLLastGoodKeysDuringOutage(t *testing.T) {
	k1, k2 := otherKey(t, "k1"), otherKey(t, "k2")
	idp := newJWKSIdP(t, k1)
	cfg := jwksTenantConfig(t, idp.URL+"/keys", config.KeyRefresh{RefreshInterval: 100 * time.Millisecond,
		MinRefreshInterval: 50 * time.Millisecond, MinRefetch: 100 * time.Millisecond,
		InitialBackoff: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	r := startServer(t, cfg)
	if resp, err := acmeCheck(t, r, k1); err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("k1: %v %v", err, resp)
	}
	idp.down.Store(true)
	// Down for a while: the refreshes (every 100ms) fail, retried with
	// backoff; the last good keys keep verifying throughout.
	for start := time.Now(); time.Since(start) < time.Second; {
		if resp, err := acmeCheck(t, r, k1); err != nil || resp.GetOkResponse() == nil {
			t.Fatalf("last good keys refused during the outage: %v %v", err, resp)
		}
		time.Sleep(20 * time.Millisecond)
	}
	failed := metricValue(t, r.srv.Registry(), "kailash_oidc_jwks_fetches_total", map[string]string{"issuer": testIssuer, "result": "error"})
	stale := metricValue(t, r.srv.Registry(), "kailash_oidc_jwks_stale", map[string]string{"issuer": testIssuer})
	idp.setKeys(k1, k2)
	idp.down.Store(false)
	up := time.Now()
	for {
		resp, err := acmeCheck(t, r, k2)
		if err == nil && resp.GetOkResponse() != nil {
			break
		}
		if time.Since(up) > 10*time.Second {
			t.Fatalf("k2 not accepted %s after the IdP came back: %v %v", time.Since(up), err, resp)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if failed < 3 || stale != 1 {
		t.Errorf("during the outage: %v failed refreshes (want >= 3 in 1s at a 100ms interval), stale gauge %v (want 1)", failed, stale)
	}
}

// Weakness: a token without a tenant claim was accepted by every tenant
// trusting its issuer and audience. With several tenants on one issuer the
// claim is now required (401 missing_tenant_claim); explicit false keeps
// the old behaviour.
func TestMissingTenantClaim(t *testing.T) {
	cfg := testConfig(t) // acme and globex share the issuer
	if b := cfg.Tenants[0].JWT.RequireTenantClaim; b == nil || !*b {
		t.Fatal("require_tenant_claim should default to true for a shared issuer")
	}
	r := startServer(t, cfg)
	noTenant := mint(t, devKey(t), claims(func(c *devtoken.Claims) { c.Tenant = "" }))
	for _, tenant := range []string{"acme", "globex"} {
		resp, err := r.client.Check(t.Context(), checkReq(tenant, "GET", "/v1/workflows", noTenant, nil))
		if err != nil {
			t.Fatal(err)
		}
		if got := unauthReason(t, resp); got != string(envoyauth.ReasonMissingTenantClaim) {
			t.Errorf("%s: reason %q, want %q", tenant, got, envoyauth.ReasonMissingTenantClaim)
		}
	}
	// With the tenant claim: accepted.
	if resp, err := r.client.Check(t.Context(), checkReq("acme", "GET", "/v1/workflows", mint(t, devKey(t), claims(nil)), nil)); err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("with tenant claim: %v %v", err, resp)
	}
	// Explicitly off for acme: its tokens may omit the claim again.
	off := false
	cfg.Tenants[0].JWT.RequireTenantClaim = &off
	if err := r.srv.Update(cfg); err != nil {
		t.Fatal(err)
	}
	if resp, err := r.client.Check(t.Context(), checkReq("acme", "GET", "/v1/workflows", noTenant, nil)); err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("require_tenant_claim: false: %v %v", err, resp)
	}
}
