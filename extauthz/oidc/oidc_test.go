package oidc_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/extauthz/jwtauth"
	"github.com/kailash-gw/kailash/extauthz/oidc"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// fakeIdP serves discovery and a JWKS on 127.0.0.1; the test swaps its keys
// and takes it down.
type fakeIdP struct {
	srv      *httptest.Server
	issuer   string
	down     atomic.Bool
	jwksHits atomic.Int32
	discHits atomic.Int32

	mu   sync.Mutex
	keys []jwk.Key // private keys; the JWKS serves their public halves
	// discoveryIssuer overrides the issuer discovery reports.
	discoveryIssuer string
}

func newIdP(t *testing.T, keys ...jwk.Key) *fakeIdP {
	t.Helper()
	idp := &fakeIdP{keys: keys}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		idp.discHits.Add(1)
		if idp.down.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		idp.mu.Lock()
		iss := idp.issuer
		if idp.discoveryIssuer != "" {
			iss = idp.discoveryIssuer
		}
		idp.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": iss, "jwks_uri": idp.srv.URL + "/keys"})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		idp.jwksHits.Add(1)
		if idp.down.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		idp.mu.Lock()
		keys := idp.keys
		idp.mu.Unlock()
		testenv.WriteJWKS(t, w, keys)
	})
	idp.srv = httptest.NewServer(mux) // 127.0.0.1, a free port
	idp.issuer = idp.srv.URL
	t.Cleanup(idp.srv.Close)
	return idp
}

func (idp *fakeIdP) setKeys(keys ...jwk.Key) {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	idp.keys = keys
}

func newKey(t *testing.T, kid string) jwk.Key {
	t.Helper()
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := jwk.FromRaw(raw)
	if err != nil {
		t.Fatal(err)
	}
	_ = k.Set(jwk.KeyIDKey, kid)
	_ = k.Set(jwk.AlgorithmKey, "ES256")
	return k
}

func mint(t *testing.T, key jwk.Key, issuer string) string {
	t.Helper()
	tok, err := devtoken.Mint(key, devtoken.Claims{
		Issuer: issuer, Audience: []string{"kailash"}, Subject: "alice", Tenant: "acme",
		Roles: []string{"analyst"}, TTL: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	keys    *oidc.Keys
	verify  oidc.TokenVerifier[*envoyauth.Identity]
	clock   *clock
	reg     *prometheus.Registry
	logs    *testenv.LogBuffer
	metrics *oidc.Metrics
}

func newEnv(t *testing.T, cfg oidc.Config) *env {
	t.Helper()
	e := &env{clock: &clock{t: time.Now()}, reg: prometheus.NewRegistry(), logs: &testenv.LogBuffer{}}
	e.metrics = oidc.NewMetrics(e.reg)
	keys, err := oidc.New(cfg, oidc.WithClock(e.clock.Now), oidc.WithMetrics(e.metrics),
		oidc.WithLogger(slog.New(slog.NewTextHandler(e.logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	v, err := jwtauth.NewVerifier("acme", config.JWT{
		Issuer: cfg.Issuer, Audiences: []string{"kailash"}, ClockSkew: 30 * time.Second,
	}, keys, jwtauth.VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.keys = keys
	e.verify = oidc.Refreshing[*envoyauth.Identity]{Verifier: v, Keys: keys}
	return e
}

func reason(err error) envoyauth.Reason {
	var ae *envoyauth.AuthError
	if errors.As(err, &ae) {
		return ae.Reason
	}
	return ""
}

func TestDiscovery(t *testing.T) {
	k1 := newKey(t, "k1")
	idp := newIdP(t, k1)
	e := newEnv(t, oidc.Config{Issuer: idp.issuer})
	id, err := e.verify.Verify(context.Background(), mint(t, k1, idp.issuer))
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if id.Subject != "alice" || id.Issuer != idp.issuer || strings.Join(id.Roles, ",") != "analyst" {
		t.Errorf("identity = %+v", id)
	}
	if idp.discHits.Load() != 1 || idp.jwksHits.Load() != 1 {
		t.Errorf("discovery %d, jwks %d fetches; want 1 and 1", idp.discHits.Load(), idp.jwksHits.Load())
	}
	// Verified from the same set: no more fetches.
	for range 5 {
		if _, err := e.verify.Verify(context.Background(), mint(t, k1, idp.issuer)); err != nil {
			t.Fatal(err)
		}
	}
	if idp.jwksHits.Load() != 1 {
		t.Errorf("jwks fetched %d times", idp.jwksHits.Load())
	}
}

func TestDiscoveryIssuerMismatch(t *testing.T) {
	k1 := newKey(t, "k1")
	idp := newIdP(t, k1)
	idp.mu.Lock()
	idp.discoveryIssuer = "https://evil.example.com"
	idp.mu.Unlock()
	e := newEnv(t, oidc.Config{Issuer: idp.issuer})
	_, err := e.verify.Verify(context.Background(), mint(t, k1, idp.issuer))
	if !errors.Is(err, oidc.ErrUnavailable) || reason(err) != "" {
		t.Fatalf("err = %v, want ErrUnavailable (not a 401)", err)
	}
	if idp.jwksHits.Load() != 0 {
		t.Error("fetched the jwks_uri of a discovery document naming another issuer")
	}
}

func TestExplicitJWKSURL(t *testing.T) {
	k1 := newKey(t, "k1")
	idp := newIdP(t, k1)
	e := newEnv(t, oidc.Config{Issuer: "https://login.example.com/tenant-1", JWKSURL: idp.srv.URL + "/keys"})
	if _, err := e.verify.Verify(context.Background(), mint(t, k1, "https://login.example.com/tenant-1")); err != nil {
		t.Fatal(err)
	}
	if idp.discHits.Load() != 0 {
		t.Error("discovery used although jwks_url is set")
	}
}

func TestKeyRotationViaUnknownKID(t *testing.T) {
	k1, k2 := newKey(t, "k1"), newKey(t, "k2")
	idp := newIdP(t, k1)
	e := newEnv(t, oidc.Config{Issuer: idp.issuer})
	ctx := context.Background()
	if _, err := e.verify.Verify(ctx, mint(t, k1, idp.issuer)); err != nil {
		t.Fatal(err)
	}
	changed := e.keys.Changed()
	idp.setKeys(k1, k2) // the IdP rotates in k2
	e.clock.Add(11 * time.Second)
	if _, err := e.verify.Verify(ctx, mint(t, k2, idp.issuer)); err != nil {
		t.Fatalf("token signed with the rotated-in key: %v", err)
	}
	select {
	case <-changed:
	default:
		t.Error("Changed not signalled")
	}
	if idp.jwksHits.Load() != 2 {
		t.Errorf("jwks fetched %d times, want 2", idp.jwksHits.Load())
	}
	// The old key still verifies while the IdP publishes it.
	if _, err := e.verify.Verify(ctx, mint(t, k1, idp.issuer)); err != nil {
		t.Fatal(err)
	}
}

func TestUnknownKIDRefetchRateLimited(t *testing.T) {
	k1 := newKey(t, "k1")
	idp := newIdP(t, k1)
	e := newEnv(t, oidc.Config{Issuer: idp.issuer, MinRefetch: 10 * time.Second})
	ctx := context.Background()
	if _, err := e.verify.Verify(ctx, mint(t, k1, idp.issuer)); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(10 * time.Second)
	// A flood of tokens with random kids: one refetch, then refused.
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			_, err := e.verify.Verify(ctx, mint(t, newKey(t, fmt.Sprintf("random-%d", i)), idp.issuer))
			if reason(err) != envoyauth.ReasonUnknownKID {
				t.Errorf("err = %v, want unknown_kid", err)
			}
		})
	}
	wg.Wait()
	if got := idp.jwksHits.Load(); got != 2 {
		t.Fatalf("jwks fetched %d times, want 2 (initial + one refetch)", got)
	}
	// Those that arrived while the refetch ran shared it; the rest (how
	// many depends on the scheduler: possibly none) were refused without
	// waiting. One more, after the refetch, is refused by the rate limit.
	n := testutil.ToFloat64(metric(e, "rate_limited", idp.issuer))
	if n > 49 {
		t.Errorf("rate_limited = %v, want at most 49", n)
	}
	if _, err := e.verify.Verify(ctx, mint(t, newKey(t, "late"), idp.issuer)); reason(err) != envoyauth.ReasonUnknownKID {
		t.Fatalf("err = %v, want unknown_kid", err)
	}
	if got := testutil.ToFloat64(metric(e, "rate_limited", idp.issuer)); got != n+1 {
		t.Errorf("rate_limited = %v after one more unknown kid, want %v", got, n+1)
	}
	e.clock.Add(9 * time.Second)
	_, _ = e.verify.Verify(ctx, mint(t, newKey(t, "another"), idp.issuer))
	if got := idp.jwksHits.Load(); got != 2 {
		t.Fatalf("refetched within 10s (%d fetches)", got)
	}
	e.clock.Add(time.Second)
	_, _ = e.verify.Verify(ctx, mint(t, newKey(t, "another"), idp.issuer))
	if got := idp.jwksHits.Load(); got != 3 {
		t.Fatalf("no refetch after 10s (%d fetches)", got)
	}
}

func metric(e *env, result, issuer string) prometheus.Collector {
	return counterVec(e.reg, "kailash_oidc_jwks_fetches_total", map[string]string{"issuer": issuer, "result": result})
}

// counterVec finds one series in reg as a Collector for testutil.ToFloat64.
func counterVec(reg *prometheus.Registry, name string, labels map[string]string) prometheus.Collector {
	return collectorFunc(func(ch chan<- prometheus.Metric) {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		next:
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if labels[lp.GetName()] != lp.GetValue() {
						continue next
					}
				}
				v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
				ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, "", nil, nil), prometheus.UntypedValue, v)
				return
			}
		}
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, "", nil, nil), prometheus.UntypedValue, 0)
	})
}

type collectorFunc func(chan<- prometheus.Metric)

func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f(ch) }
func (f collectorFunc) Describe(chan<- *prometheus.Desc)    {}

func TestIdPDownAfterFirstFetchKeepsVerifying(t *testing.T) {
	k1 := newKey(t, "k1")
	idp := newIdP(t, k1)
	e := newEnv(t, oidc.Config{Issuer: idp.issuer})
	ctx := context.Background()
	if _, err := e.verify.Verify(ctx, mint(t, k1, idp.issuer)); err != nil {
		t.Fatal(err)
	}
	idp.down.Store(true)
	e.clock.Add(time.Minute)
	// An unknown kid forces a refetch, which fails: the old keys stay.
	if _, err := e.verify.Verify(ctx, mint(t, newKey(t, "k9"), idp.issuer)); reason(err) != envoyauth.ReasonUnknownKID {
		t.Fatalf("unknown kid with IdP down: err = %v", err)
	}
	if _, err := e.verify.Verify(ctx, mint(t, k1, idp.issuer)); err != nil {
		t.Fatalf("last good keys must keep verifying: %v", err)
	}
	stale := counterVec(e.reg, "kailash_oidc_jwks_stale", map[string]string{"issuer": idp.issuer})
	if v := testutil.ToFloat64(stale); v != 1 {
		t.Errorf("stale gauge = %v, want 1", v)
	}
	if !strings.Contains(e.logs.String(), "last good keys keep verifying") {
		t.Errorf("no log of the outage: %q", e.logs.String())
	}
	// Back up: the gauge clears.
	idp.down.Store(false)
	e.clock.Add(time.Minute)
	if !e.keys.RefreshForKID(ctx, "k1") { // k1 is known: no fetch needed
		t.Fatal("k1 unknown")
	}
	// While failing a request only triggers the refetch (it does not wait).
	_, _ = e.verify.Verify(ctx, mint(t, newKey(t, "k10"), idp.issuer))
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(stale) != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if v := testutil.ToFloat64(stale); v != 0 {
		t.Errorf("stale gauge = %v after recovery, want 0", v)
	}
}

func TestIdPDownAtStartThenUp(t *testing.T) {
	k1 := newKey(t, "k1")
	idp := newIdP(t, k1)
	idp.down.Store(true)
	e := newEnv(t, oidc.Config{Issuer: idp.issuer, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.keys.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not stop on cancel")
		}
	}()

	tok := mint(t, k1, idp.issuer)
	_, err := e.verify.Verify(context.Background(), tok)
	if !errors.Is(err, oidc.ErrUnavailable) || reason(err) != "" {
		t.Fatalf("IdP down at start: err = %v, want ErrUnavailable (503), not a 401", err)
	}
	// Run keeps retrying with backoff.
	deadline := time.Now().Add(5 * time.Second)
	for idp.discHits.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if idp.discHits.Load() < 3 {
		t.Fatalf("only %d attempts while down", idp.discHits.Load())
	}
	changed := e.keys.Changed()
	idp.down.Store(false)
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("keys not fetched after the IdP came up")
	}
	if _, err := e.verify.Verify(context.Background(), tok); err != nil {
		t.Fatalf("after the IdP came up: %v", err)
	}
	// The gauge is set just after Changed fires (by the fetch's caller).
	ready := counterVec(e.reg, "kailash_oidc_jwks_ready", map[string]string{"issuer": idp.issuer})
	for deadline := time.Now().Add(5 * time.Second); testutil.ToFloat64(ready) != 1 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if v := testutil.ToFloat64(ready); v != 1 {
		t.Errorf("ready gauge = %v", v)
	}
}

func TestByIssuer(t *testing.T) {
	ka, kb := newKey(t, "a"), newKey(t, "b")
	idpA, idpB := newIdP(t, ka), newIdP(t, kb)
	ea := newEnv(t, oidc.Config{Issuer: idpA.issuer})
	eb := newEnv(t, oidc.Config{Issuer: idpB.issuer})
	multi := oidc.ByIssuer[*envoyauth.Identity]{
		Verifiers: map[string]oidc.TokenVerifier[*envoyauth.Identity]{idpA.issuer: ea.verify, idpB.issuer: eb.verify},
		Unknown: func(iss string) error {
			return &envoyauth.AuthError{Reason: envoyauth.ReasonWrongIssuer, Detail: fmt.Sprintf("iss %q", iss)}
		},
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		tok  string
		want envoyauth.Reason
	}{
		{"issuer A", mint(t, ka, idpA.issuer), ""},
		{"issuer B", mint(t, kb, idpB.issuer), ""},
		{"B's key claiming A", mint(t, kb, idpA.issuer), envoyauth.ReasonUnknownKID},
		{"unknown issuer", mint(t, ka, "https://evil.example.com"), envoyauth.ReasonWrongIssuer},
		{"garbage", "x.y.z", envoyauth.ReasonWrongIssuer},
	} {
		id, err := multi.Verify(ctx, tc.tok)
		if got := reason(err); got != tc.want || (tc.want == "" && err != nil) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
		if tc.want == "" && err == nil && id.Subject != "alice" {
			t.Errorf("%s: id = %+v", tc.name, id)
		}
	}
}

func TestNewValidates(t *testing.T) {
	for _, c := range []oidc.Config{
		{},
		{Issuer: "urn:example"},
		{Issuer: "https://x", JWKSURL: "file:///etc/passwd"},
		{Issuer: "https://x", DiscoveryURL: "ftp://x/.well-known"},
	} {
		if _, err := oidc.New(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if _, err := oidc.New(oidc.Config{Issuer: "urn:example", JWKSURL: "https://x/keys"}); err != nil {
		t.Errorf("non-URL issuer with explicit JWKS: %v", err)
	}
}
