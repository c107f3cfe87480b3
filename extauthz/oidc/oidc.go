// Package oidc keeps the signing keys of external OIDC / JWT issuers fresh
// and available through IdP outages. A Keys value is one issuer's key set,
// found by discovery (/.well-known/openid-configuration) or an explicit JWKS
// URL; it implements the KeySource interface of package extauthz
// (Keys(ctx) (jwk.Set, error)), so the existing Verifier uses it unchanged.
//
// Availability rules:
//   - Keys returns the last good set. A failed refresh never replaces it; it
//     counts a metric, logs once per outage, and the set keeps verifying.
//   - Until a first set is known (the IdP was down at start-up), Keys returns
//     ErrUnavailable (the Check path answers 503), while Run retries in the
//     background with exponential backoff. Start-up never fails for this.
//   - A token whose kid is not in the set triggers a refetch (RefreshForKID,
//     or the Refreshing wrapper), at most once per MinRefetch per issuer, so
//     a flood of tokens with random kids cannot hammer the IdP.
package oidc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

// ErrUnavailable: no key set has been fetched yet (or the fetch was
// cancelled). Callers answer 503, never 401.
var ErrUnavailable = errors.New("oidc: issuer keys unavailable")

// Config is one issuer.
type Config struct {
	// Issuer is the exact iss value; with no JWKSURL it is also the base of
	// discovery, and discovery must name the same issuer.
	Issuer string `yaml:"issuer"`
	// JWKSURL skips discovery. DiscoveryURL overrides the default
	// Issuer + "/.well-known/openid-configuration".
	JWKSURL      string `yaml:"jwks_url"`
	DiscoveryURL string `yaml:"discovery_url"`
	// RefreshInterval: background refresh of a known set (default 15m).
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// MinRefetch: least time between two fetches triggered by unknown kids
	// or by Keys while no set is known (default 10s).
	MinRefetch time.Duration `yaml:"min_refetch"`
	// InitialBackoff and MaxBackoff bound the retry delay while fetches
	// fail (defaults 1s and 5m; the delay doubles, with jitter).
	InitialBackoff time.Duration `yaml:"initial_backoff"`
	MaxBackoff     time.Duration `yaml:"max_backoff"`
	// Timeout bounds one HTTP request (default 5s).
	Timeout time.Duration `yaml:"timeout"`
}

// Defaults.
const (
	DefaultRefreshInterval = 15 * time.Minute
	DefaultMinRefetch      = 10 * time.Second
	DefaultInitialBackoff  = time.Second
	DefaultMaxBackoff      = 5 * time.Minute
	DefaultTimeout         = 5 * time.Second
	// maxDocument bounds a discovery document or JWKS.
	maxDocument = 1 << 20
)

// Option tunes Keys.
type Option func(*Keys)

// WithHTTPClient sets the client used for discovery and JWKS.
func WithHTTPClient(c *http.Client) Option { return func(k *Keys) { k.client = c } }

// WithLogger sets where fetch failures are logged (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(k *Keys) { k.log = l } }

// WithMetrics reports to m (shared by all issuers; see NewMetrics).
func WithMetrics(m *Metrics) Option { return func(k *Keys) { k.metrics = m } }

// WithClock sets the clock used for rate limiting (tests).
func WithClock(now func() time.Time) Option { return func(k *Keys) { k.now = now } }

// Keys is one issuer's key set. It is safe for concurrent use.
type Keys struct {
	cfg     Config
	client  *http.Client
	log     *slog.Logger
	metrics *Metrics
	now     func() time.Time

	fetchMu sync.Mutex // serialises fetches (one request to the IdP at a time)

	mu        sync.Mutex // guards the fields below
	set       jwk.Set    // last good set; nil until the first success
	sum       [32]byte   // hash of the JWKS document behind set
	kids      map[string]bool
	jwksURL   string // from discovery, or cfg.JWKSURL
	lastFetch time.Time
	lastErr   error
	failing   bool // the last fetch failed (logged once per outage)
	changed   chan struct{}
}

// New validates cfg. It does no I/O: call Run (in a goroutine) to fetch and
// keep the keys fresh; Keys also fetches on demand, rate limited.
func New(cfg Config, opts ...Option) (*Keys, error) {
	iss, err := url.Parse(cfg.Issuer)
	if cfg.Issuer == "" || err != nil {
		return nil, fmt.Errorf("oidc: issuer %q is not a URL", cfg.Issuer)
	}
	if cfg.JWKSURL == "" && cfg.DiscoveryURL == "" {
		if iss.Scheme != "https" && iss.Scheme != "http" || iss.Host == "" {
			return nil, fmt.Errorf("oidc: issuer %q: discovery needs an http(s) issuer, or set jwks_url", cfg.Issuer)
		}
		cfg.DiscoveryURL = strings.TrimSuffix(cfg.Issuer, "/") + "/.well-known/openid-configuration"
	}
	for _, u := range []string{cfg.JWKSURL, cfg.DiscoveryURL} {
		if u == "" {
			continue
		}
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
			return nil, fmt.Errorf("oidc: %q is not an http(s) URL", u)
		}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.RefreshInterval, DefaultRefreshInterval)
	def(&cfg.MinRefetch, DefaultMinRefetch)
	def(&cfg.InitialBackoff, DefaultInitialBackoff)
	def(&cfg.MaxBackoff, DefaultMaxBackoff)
	def(&cfg.Timeout, DefaultTimeout)
	k := &Keys{cfg: cfg, log: slog.Default(), now: time.Now, jwksURL: cfg.JWKSURL, changed: make(chan struct{})}
	for _, o := range opts {
		o(k)
	}
	if k.client == nil {
		k.client = &http.Client{Timeout: cfg.Timeout}
	}
	k.metrics.setReady(cfg.Issuer, false)
	return k, nil
}

// Issuer returns the configured issuer.
func (k *Keys) Issuer() string { return k.cfg.Issuer }

// Keys returns the last good set (the same value until the keys change).
// With no set yet it tries one fetch (rate limited by MinRefetch) and
// otherwise returns ErrUnavailable.
func (k *Keys) Keys(ctx context.Context) (jwk.Set, error) {
	k.mu.Lock()
	set := k.set
	k.mu.Unlock()
	if set != nil {
		return set, nil
	}
	if k.allowFetch() {
		_ = k.fetch(ctx, "initial")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.set == nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, k.cfg.Issuer, k.lastErr)
	}
	return k.set, nil
}

// Ready reports whether a key set is known.
func (k *Keys) Ready() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.set != nil
}

// Changed returns a channel closed at the next change of the key set.
func (k *Keys) Changed() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.changed
}

// Has reports whether the current set holds kid.
func (k *Keys) Has(kid string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.kids[kid]
}

// RefreshForKID refetches the keys because a token names kid, unknown to the
// current set, unless a fetch happened less than MinRefetch ago. It reports
// whether kid is known afterwards.
func (k *Keys) RefreshForKID(ctx context.Context, kid string) bool {
	if k.Has(kid) {
		return true
	}
	if !k.allowFetch() {
		k.metrics.fetched(k.cfg.Issuer, "rate_limited")
		return k.Has(kid) // a concurrent fetch may have brought it
	}
	_ = k.fetch(ctx, "unknown_kid")
	return k.Has(kid)
}

// allowFetch reserves a fetch slot if MinRefetch has passed since the last.
func (k *Keys) allowFetch() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	if !k.lastFetch.IsZero() && now.Sub(k.lastFetch) < k.cfg.MinRefetch {
		return false
	}
	k.lastFetch = now
	return true
}

// Run fetches the keys until it succeeds (exponential backoff with jitter
// from InitialBackoff to MaxBackoff), then refreshes them every
// RefreshInterval (backing off the same way while the IdP is down). It
// returns when ctx is cancelled.
func (k *Keys) Run(ctx context.Context) {
	backoff := k.cfg.InitialBackoff
	for {
		var wait time.Duration
		k.mu.Lock()
		k.lastFetch = k.now()
		k.mu.Unlock()
		if err := k.fetch(ctx, "background"); err != nil {
			if ctx.Err() != nil {
				return
			}
			wait = jitter(backoff)
			backoff = min(backoff*2, k.cfg.MaxBackoff)
		} else {
			backoff = k.cfg.InitialBackoff
			wait = jitter(k.cfg.RefreshInterval)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// jitter returns d ± 10%.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d - d/10 + rand.N(d/5+1)
}

// fetch gets the JWKS (running discovery first if needed) and swaps it in.
// On failure the current set stays.
func (k *Keys) fetch(ctx context.Context, why string) error {
	k.fetchMu.Lock()
	defer k.fetchMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, k.cfg.Timeout)
	defer cancel()
	err := k.fetchLocked(ctx)
	k.mu.Lock()
	defer k.mu.Unlock()
	k.lastErr = err
	if err != nil {
		k.metrics.fetched(k.cfg.Issuer, "error")
		k.metrics.setStale(k.cfg.Issuer, k.set != nil)
		if !k.failing {
			k.failing = true
			if k.set != nil {
				k.log.Warn("oidc: cannot refresh issuer keys; the last good keys keep verifying",
					"issuer", k.cfg.Issuer, "trigger", why, "err", err)
			} else {
				k.log.Warn("oidc: cannot fetch issuer keys; tokens of this issuer get 503 until they are known",
					"issuer", k.cfg.Issuer, "trigger", why, "err", err)
			}
		}
		return err
	}
	if k.failing {
		k.failing = false
		k.log.Info("oidc: issuer keys fetched again", "issuer", k.cfg.Issuer)
	}
	k.metrics.setStale(k.cfg.Issuer, false)
	k.metrics.setReady(k.cfg.Issuer, true)
	return nil
}

func (k *Keys) fetchLocked(ctx context.Context) error {
	k.mu.Lock()
	jwksURL := k.jwksURL
	k.mu.Unlock()
	if k.cfg.JWKSURL == "" {
		// Discovery runs on every fetch, so a moved jwks_uri is followed;
		// a failed discovery falls back to the last known jwks_uri.
		u, err := k.discover(ctx)
		switch {
		case err == nil:
			jwksURL = u
		case jwksURL == "":
			return err
		default:
			k.log.Debug("oidc: discovery failed; using the last jwks_uri", "issuer", k.cfg.Issuer, "err", err)
		}
	}
	body, err := k.get(ctx, jwksURL)
	if err != nil {
		return fmt.Errorf("jwks %s: %w", jwksURL, err)
	}
	set, err := jwk.Parse(body)
	if err != nil {
		return fmt.Errorf("jwks %s: %w", jwksURL, err)
	}
	if set.Len() == 0 {
		return fmt.Errorf("jwks %s: no keys", jwksURL)
	}
	sum := sha256.Sum256(body)
	k.mu.Lock()
	defer k.mu.Unlock()
	k.jwksURL = jwksURL
	if k.set != nil && sum == k.sum {
		k.metrics.fetched(k.cfg.Issuer, "unchanged")
		return nil // same keys: keep the same Set value (verifier caches stay)
	}
	kids := map[string]bool{}
	for i := range set.Len() {
		if key, ok := set.Key(i); ok && key.KeyID() != "" {
			kids[key.KeyID()] = true
		}
	}
	k.set, k.sum, k.kids = set, sum, kids
	close(k.changed)
	k.changed = make(chan struct{})
	k.metrics.fetched(k.cfg.Issuer, "ok")
	return nil
}

type discovery struct {
	Issuer  string `json:"issuer"`
	JWKSURI string `json:"jwks_uri"`
}

func (k *Keys) discover(ctx context.Context) (string, error) {
	body, err := k.get(ctx, k.cfg.DiscoveryURL)
	if err != nil {
		return "", fmt.Errorf("discovery %s: %w", k.cfg.DiscoveryURL, err)
	}
	var d discovery
	if err := json.Unmarshal(body, &d); err != nil {
		return "", fmt.Errorf("discovery %s: %w", k.cfg.DiscoveryURL, err)
	}
	// OpenID Connect Discovery §4.3: the issuer must be the one we asked.
	if d.Issuer != k.cfg.Issuer {
		return "", fmt.Errorf("discovery %s: issuer %q, want %q", k.cfg.DiscoveryURL, d.Issuer, k.cfg.Issuer)
	}
	u, err := url.Parse(d.JWKSURI)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("discovery %s: jwks_uri %q is not an http(s) URL", k.cfg.DiscoveryURL, d.JWKSURI)
	}
	return d.JWKSURI, nil
}

func (k *Keys) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxDocument {
		return nil, errors.New("document too large")
	}
	return bytes.TrimSpace(body), nil
}
