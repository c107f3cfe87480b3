package oidc_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/extauthz/jwtauth"
	"github.com/kailash-gw/kailash/extauthz/oidc"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// newCacheEnv is newEnv with the disk cache in dir, a clock starting at
// start, and its own logs and metrics (a restarted process).
func newCacheEnv(t *testing.T, cfg oidc.Config, dir string, maxStale time.Duration, start time.Time) *env {
	t.Helper()
	e := &env{clock: &clock{t: start}, reg: prometheus.NewRegistry(), logs: &testenv.LogBuffer{}}
	e.metrics = oidc.NewMetrics(e.reg)
	keys, err := oidc.New(cfg, oidc.WithClock(e.clock.Now), oidc.WithMetrics(e.metrics), oidc.WithCache(dir, maxStale),
		oidc.WithLogger(slog.New(slog.NewTextHandler(e.logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	v, err := jwtauth.NewVerifier("acme", config.JWT{Issuer: cfg.Issuer, Audiences: []string{"kailash"}, ClockSkew: 30 * time.Second},
		keys, jwtauth.VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.keys = keys
	e.verify = oidc.Refreshing[*envoyauth.Identity]{Verifier: v, Keys: keys}
	return e
}

// ageMetric is kailash_oidc_jwks_age_seconds{issuer, source}; ok is false
// when the series does not exist.
func ageMetric(t *testing.T, reg *prometheus.Registry, issuer, source string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "kailash_oidc_jwks_age_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["issuer"] == issuer && l["source"] == source {
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

// Fault: authz restarted while the IdP was down refused every token of
// that IdP (the last good keys lived only in memory; istio#58101). Now the
// keys (and discovery's jwks_uri) are persisted and used at start when the
// IdP does not answer, within max_stale.
func TestCachedKeysSurviveRestartDuringOutage(t *testing.T) {
	k1 := newKey(t, "k1")
	idp := newIdP(t, k1)
	dir := filepath.Join(t.TempDir(), "jwks-cache")
	cfg := oidc.Config{Issuer: idp.issuer} // discovery
	ctx := context.Background()
	tok := mint(t, k1, idp.issuer)
	t0 := time.Now()

	e1 := newCacheEnv(t, cfg, dir, 24*time.Hour, t0)
	if _, err := e1.verify.Verify(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if v, ok := ageMetric(t, e1.reg, idp.issuer, "fetch"); !ok || v < 0 || v > 60 {
		t.Errorf("age{source=fetch} = %v (present %v), want about 0", v, ok)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(files) != 1 {
		t.Fatalf("cache dir holds %v, want one file (no temp files left)", files)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700, files[0]: 0o600} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %s, want %s", p, st.Mode().Perm(), want)
		}
	}

	idp.srv.Close() // the IdP is gone: connection refused

	// A restart an hour later: the first fetch fails, the cache serves.
	e2 := newCacheEnv(t, cfg, dir, 24*time.Hour, t0.Add(time.Hour))
	if _, err := e2.verify.Verify(ctx, tok); err != nil {
		t.Fatalf("restart during the outage: %v\nlogs: %s", err, e2.logs)
	}
	if v, ok := ageMetric(t, e2.reg, idp.issuer, "cache"); !ok || v < 3590 || v > 3700 {
		t.Errorf("age{source=cache} = %v (present %v), want about 3600", v, ok)
	}
	if l := e2.logs.String(); !strings.Contains(l, "verifying with the cached keys") || !strings.Contains(l, "age=1h0m") {
		t.Errorf("no log saying the cached keys are used and how old: %s", l)
	}
	// A token with a kid the cache does not hold is still an identity failure.
	if _, err := e2.verify.Verify(ctx, mint(t, newKey(t, "k2"), idp.issuer)); reason(err) != envoyauth.ReasonUnknownKID {
		t.Errorf("unknown kid from the cache: %v", err)
	}

	// The outage outlasts max_stale: the keys stop verifying (503).
	e2.clock.Add(24 * time.Hour)
	_, err := e2.verify.Verify(ctx, tok)
	if !errors.Is(err, oidc.ErrUnavailable) || reason(err) != "" {
		t.Fatalf("keys older than max_stale: err = %v, want ErrUnavailable", err)
	}
	if l := e2.logs.String(); !strings.Contains(l, "older than max_stale") {
		t.Errorf("no log of the keys expiring: %s", l)
	}

	// A restart with a cache older than max_stale: refused from the start.
	e3 := newCacheEnv(t, cfg, dir, 24*time.Hour, t0.Add(25*time.Hour))
	if _, err := e3.verify.Verify(ctx, tok); !errors.Is(err, oidc.ErrUnavailable) {
		t.Fatalf("cache older than max_stale: err = %v, want ErrUnavailable", err)
	}
	if l := e3.logs.String(); !strings.Contains(l, "cached keys are too old to use") {
		t.Errorf("no clear log of the stale cache: %s", l)
	}
}

// A cache file others could have written is not trusted, and a cache is
// never used while the IdP answers.
func TestCacheFileTrust(t *testing.T) {
	k1, k2 := newKey(t, "k1"), newKey(t, "k2")
	idp := newIdP(t, k1)
	dir := t.TempDir()
	cfg := oidc.Config{Issuer: idp.issuer, JWKSURL: idp.srv.URL + "/keys"}
	ctx := context.Background()
	e1 := newCacheEnv(t, cfg, dir, time.Hour, time.Now())
	if _, err := e1.verify.Verify(ctx, mint(t, k1, idp.issuer)); err != nil {
		t.Fatal(err)
	}
	// The IdP rotated k1 out while authz was stopped: the restart must not
	// accept k1 from the cache.
	idp.setKeys(k2)
	e2 := newCacheEnv(t, cfg, dir, time.Hour, time.Now())
	if _, err := e2.verify.Verify(ctx, mint(t, k1, idp.issuer)); reason(err) != envoyauth.ReasonUnknownKID {
		t.Fatalf("rotated-out key accepted while the IdP answers: %v", err)
	}

	idp.down.Store(true)
	files, _ := filepath.Glob(filepath.Join(dir, "jwks-*.json"))
	if len(files) != 1 {
		t.Fatalf("cache files %v", files)
	}
	if err := os.Chmod(files[0], 0o666); err != nil {
		t.Fatal(err)
	}
	e3 := newCacheEnv(t, cfg, dir, time.Hour, time.Now())
	if _, err := e3.verify.Verify(ctx, mint(t, k2, idp.issuer)); !errors.Is(err, oidc.ErrUnavailable) {
		t.Fatalf("group-writable cache used: err = %v", err)
	}
	if l := e3.logs.String(); !strings.Contains(l, "writable by group or others") {
		t.Errorf("no log of the untrusted cache: %s", l)
	}
}
