// Package oidc keeps the signing keys of JWT issuers fresh and available
// through IdP outages. A Keys value is one key source: an issuer's key set
// found by discovery (/.well-known/openid-configuration) or an explicit JWKS
// URL. It is the one JWKS mechanism of ext_authz: a tenant's jwt.jwks_url
// and its issuers[] both use it. It implements the KeySource interface of
// package extauthz (Keys(ctx) (jwk.Set, error)), so the Verifier uses it
// unchanged.
//
// It is a small loop around jwk.Parse rather than jwx's jwk.Cache: that
// cache (httprc v1) reschedules a failed fetch at the regular interval (15
// minutes by default, no backoff, so a source that failed its first fetch
// stays unusable that long), has no rate-limited, shared refetch for an
// unknown kid, and reports failures through an error sink without a state,
// so "log once per state change" and "last success" cannot be built on it.
//
// Availability rules:
//   - Keys returns the last good set. A failed refresh never replaces it; it
//     counts a metric, logs once per state change (ok→failing, failing→ok),
//     and the set keeps verifying.
//   - Until a first set is known (the IdP was down at start-up), Keys returns
//     ErrUnavailable (the Check path answers 503), while Run retries in the
//     background with exponential backoff (InitialBackoff doubling up to
//     MaxBackoff) and requests may trigger a fetch at most once per
//     MinRefetch. Start-up never fails for this.
//   - A known set is refreshed after the response's Cache-Control max-age
//     (or Expires), kept within MinRefreshInterval..RefreshInterval; without
//     either header, every RefreshInterval.
//   - A token whose kid is not in the set triggers a refetch (RefreshForKID,
//     or the Refreshing wrapper), at most once per MinRefetch per source; all
//     requests arriving while a fetch runs share it (one request to the IdP),
//     so a flood of tokens with random kids cannot hammer the IdP.
//   - While a source is failing no request waits for it: requests answer
//     from the last good set (or 503) and only trigger the next attempt.
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
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/httpcc"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// ErrUnavailable: no key set has been fetched yet (or the fetch was
// cancelled). Callers answer 503, never 401.
var ErrUnavailable = errors.New("oidc: issuer keys unavailable")

// Config is one key source. It is comparable: equal configs share one Keys.
type Config struct {
	// Issuer is the exact iss value; with no JWKSURL it is also the base of
	// discovery, and discovery must name the same issuer.
	Issuer string `yaml:"issuer"`
	// JWKSURL skips discovery. DiscoveryURL overrides the default
	// Issuer + "/.well-known/openid-configuration".
	JWKSURL      string `yaml:"jwks_url"`
	DiscoveryURL string `yaml:"discovery_url"`
	// RefreshInterval is the longest time a known set is kept before it is
	// refetched (default 15m), and the interval used when the JWKS response
	// has no Cache-Control max-age or Expires.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// MinRefreshInterval is the shortest (default 1m): a max-age below it
	// (or no-cache, no-store) refreshes every MinRefreshInterval.
	MinRefreshInterval time.Duration `yaml:"min_refresh_interval"`
	// MinRefetch: least time between two fetches triggered by requests (an
	// unknown kid, or Keys while no set is known) (default 10s).
	MinRefetch time.Duration `yaml:"min_refetch"`
	// InitialBackoff and MaxBackoff bound the retry delay of the background
	// loop while fetches fail or nothing was ever fetched (defaults 1s and
	// 30s; the delay doubles, with jitter).
	InitialBackoff time.Duration `yaml:"initial_backoff"`
	MaxBackoff     time.Duration `yaml:"max_backoff"`
	// Timeout bounds one fetch (discovery and JWKS) (default 5s).
	Timeout time.Duration `yaml:"timeout"`
}

// Defaults.
const (
	DefaultRefreshInterval    = 15 * time.Minute
	DefaultMinRefreshInterval = time.Minute
	DefaultMinRefetch         = 10 * time.Second
	DefaultInitialBackoff     = time.Second
	DefaultMaxBackoff         = 30 * time.Second
	DefaultTimeout            = 5 * time.Second
	// maxDocument bounds a discovery document or JWKS.
	maxDocument = 1 << 20
)

// Option tunes Keys.
type Option func(*Keys)

// WithHTTPClient sets the client used for discovery and JWKS.
func WithHTTPClient(c *http.Client) Option { return func(k *Keys) { k.client = c } }

// WithLogger sets where state changes are logged (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(k *Keys) { k.log = l } }

// WithMetrics reports to m (shared by all sources; see NewMetrics).
func WithMetrics(m *Metrics) Option { return func(k *Keys) { k.metrics = m } }

// WithClock sets the clock used for rate limiting (tests).
func WithClock(now func() time.Time) Option { return func(k *Keys) { k.now = now } }

// flight is one fetch in progress; err is set before done is closed.
type flight struct {
	done chan struct{}
	err  error
}

// Keys is one key source. It is safe for concurrent use.
type Keys struct {
	cfg     Config
	client  *http.Client
	log     *slog.Logger
	metrics *Metrics
	now     func() time.Time

	mu        sync.Mutex // guards the fields below
	base      context.Context
	set       jwk.Set  // last good set; nil until the first success
	sum       [32]byte // hash of the JWKS document behind set
	kids      map[string]bool
	jwksURL   string        // from discovery, or cfg.JWKSURL
	refresh   time.Duration // next refresh after a success (Cache-Control)
	lastFetch time.Time     // start of the last request-triggered fetch (rate limit)
	lastErr   error
	lastFail  error     // the last failed fetch's error, kept after a success (status.go)
	lastErrAt time.Time // when lastFail happened
	lastOK    time.Time // end of the last successful fetch (status.go)
	failures  int64     // failed fetches (status.go)
	failing   bool      // the last fetch failed (logged once per state change)
	inflight  *flight   // the fetch in progress, nil when none
	changed   chan struct{}

	cacheDir   string        // WithCache: where the last good keys are persisted
	maxStale   time.Duration // WithCache: keys fetched longer ago are not used
	fetchedAt  time.Time     // when set was last fetched (or written to the cache)
	fromCache  bool          // set was read from the cache at start
	cacheTried bool          // the cache was read once (only at start)
	staleLog   bool          // "too old" was logged for the current set

	endpoints    Endpoints // of the last good discovery document
	hasEndpoints bool      // endpoints were read from one
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
	def(&cfg.MinRefreshInterval, min(DefaultMinRefreshInterval, cfg.RefreshInterval))
	def(&cfg.MinRefetch, DefaultMinRefetch)
	def(&cfg.InitialBackoff, DefaultInitialBackoff)
	def(&cfg.MaxBackoff, max(DefaultMaxBackoff, cfg.InitialBackoff))
	def(&cfg.Timeout, DefaultTimeout)
	if cfg.MinRefreshInterval > cfg.RefreshInterval {
		return nil, fmt.Errorf("oidc: %s: min_refresh_interval %s is above refresh_interval %s", cfg.Issuer, cfg.MinRefreshInterval, cfg.RefreshInterval)
	}
	if cfg.InitialBackoff > cfg.MaxBackoff {
		return nil, fmt.Errorf("oidc: %s: initial_backoff %s is above max_backoff %s", cfg.Issuer, cfg.InitialBackoff, cfg.MaxBackoff)
	}
	k := &Keys{cfg: cfg, log: slog.Default(), now: time.Now, jwksURL: cfg.JWKSURL, changed: make(chan struct{}),
		base: context.Background()}
	for _, o := range opts {
		o(k)
	}
	if k.client == nil {
		k.client = &http.Client{Timeout: cfg.Timeout}
	}
	k.metrics.setReady(cfg.Issuer, false)
	k.metrics.track(k)
	return k, nil
}

// Issuer returns the configured issuer.
func (k *Keys) Issuer() string { return k.cfg.Issuer }

// Keys returns the last good set (the same value until the keys change).
// With no set yet it joins the fetch in progress or starts one (rate
// limited by MinRefetch) and waits for it (bounded by ctx) unless the source
// is failing; otherwise it returns ErrUnavailable.
func (k *Keys) Keys(ctx context.Context) (jwk.Set, error) {
	k.mu.Lock()
	set := k.usableLocked()
	k.mu.Unlock()
	if set != nil {
		return set, nil
	}
	if f, wait := k.trigger("initial"); f != nil && wait {
		select {
		case <-f.done:
		case <-ctx.Done():
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.set != nil && k.usableLocked() == nil {
		return nil, fmt.Errorf("%w: %s: keys last fetched %s ago, beyond max_stale %s: %v", ErrUnavailable, k.cfg.Issuer,
			k.now().Sub(k.fetchedAt).Round(time.Second), k.maxStale, k.lastErr)
	}
	if k.set == nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, k.cfg.Issuer, k.lastErr)
	}
	return k.set, nil
}

// usableLocked is the set unless it is older than maxStale (nil then, and
// logged once); k.mu is held.
func (k *Keys) usableLocked() jwk.Set {
	if k.set == nil || k.maxStale <= 0 || k.now().Sub(k.fetchedAt) <= k.maxStale {
		return k.set
	}
	if !k.staleLog {
		k.staleLog = true
		k.metrics.setReady(k.cfg.Issuer, false)
		k.log.Error("jwks: the last good keys are older than max_stale and no longer verify; tokens of this issuer get 503 until the IdP answers",
			"issuer", k.cfg.Issuer, "url", k.sourceURL(), "fetched_at", k.fetchedAt.UTC().Format(time.RFC3339),
			"age", k.now().Sub(k.fetchedAt).Round(time.Second).String(), "max_stale", k.maxStale.String())
	}
	return nil
}

// Ready reports whether a key set is known.
func (k *Keys) Ready() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.usableLocked() != nil
}

// Failing reports whether the last fetch failed.
func (k *Keys) Failing() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.failing
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
// current set: it joins the fetch in progress, or starts one unless a
// request started one less than MinRefetch ago, and waits for it (bounded
// by ctx) unless the source is failing. It reports whether kid is known
// afterwards.
func (k *Keys) RefreshForKID(ctx context.Context, kid string) bool {
	if k.Has(kid) {
		return true
	}
	f, wait := k.trigger("unknown_kid")
	if f == nil {
		k.metrics.fetched(k.cfg.Issuer, "rate_limited")
		return k.Has(kid) // a concurrent fetch may have brought it
	}
	if wait {
		select {
		case <-f.done:
		case <-ctx.Done():
		}
	}
	return k.Has(kid)
}

// trigger returns the fetch in progress, or starts one if MinRefetch has
// passed since the last request-triggered one (nil: rate limited). wait is
// false while the source is failing: the caller must not wait for it.
func (k *Keys) trigger(why string) (f *flight, wait bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	wait = !k.failing
	if k.inflight != nil {
		return k.inflight, wait
	}
	now := k.now()
	if !k.lastFetch.IsZero() && now.Sub(k.lastFetch) < k.cfg.MinRefetch {
		return nil, false
	}
	k.lastFetch = now
	return k.startLocked(why), wait
}

// startLocked starts a fetch on the background context; k.mu is held.
func (k *Keys) startLocked(why string) *flight {
	f := &flight{done: make(chan struct{})}
	k.inflight = f
	ctx := k.base
	go func() {
		err := k.fetch(ctx, why)
		k.mu.Lock()
		k.inflight = nil
		k.mu.Unlock()
		f.err = err
		close(f.done)
	}()
	return f
}

// Run fetches the keys until it succeeds (exponential backoff with jitter
// from InitialBackoff to MaxBackoff), then refreshes them as the JWKS
// response's caching headers say, within MinRefreshInterval and
// RefreshInterval (backing off the same way while the IdP is down). Fetches
// started by requests meanwhile use ctx too. It returns when ctx is
// cancelled.
func (k *Keys) Run(ctx context.Context) {
	k.mu.Lock()
	k.base = ctx
	k.mu.Unlock()
	defer k.metrics.untrack(k)
	backoff := k.cfg.InitialBackoff
	for {
		k.mu.Lock()
		f := k.inflight
		if f == nil {
			f = k.startLocked("background")
		}
		k.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-f.done:
		}
		var wait time.Duration
		if f.err != nil {
			if ctx.Err() != nil {
				return
			}
			wait = jitter(backoff)
			backoff = min(backoff*2, k.cfg.MaxBackoff)
		} else {
			backoff = k.cfg.InitialBackoff
			k.mu.Lock()
			wait = jitter(k.refresh)
			k.mu.Unlock()
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
// On failure the current set stays. Only one fetch runs at a time (see
// inflight).
func (k *Keys) fetch(ctx context.Context, why string) error {
	ctx, cancel := context.WithTimeout(ctx, k.cfg.Timeout)
	defer cancel()
	err := k.fetchOnce(ctx)
	k.mu.Lock()
	defer k.mu.Unlock()
	if err != nil && k.base.Err() != nil {
		return err // shutting down: not an outage
	}
	k.lastErr = err
	if err != nil {
		k.lastFail, k.lastErrAt = err, time.Now()
		k.failures++
		k.metrics.fetched(k.cfg.Issuer, "error")
		if k.set == nil && k.cacheDir != "" && !k.cacheTried {
			k.useCacheLocked(err)
		}
		k.metrics.setStale(k.cfg.Issuer, k.set != nil)
		if !k.failing {
			k.failing = true
			switch {
			case k.fromCache: // useCacheLocked logged it
			case k.set != nil:
				k.log.Warn("jwks: cannot refresh keys; the last good keys keep verifying",
					"issuer", k.cfg.Issuer, "url", k.sourceURL(), "trigger", why, "err", err)
			default:
				k.log.Warn("jwks: cannot fetch keys; tokens of this issuer get 503 until they are known",
					"issuer", k.cfg.Issuer, "url", k.sourceURL(), "trigger", why, "err", err)
			}
		}
		return err
	}
	k.lastOK = time.Now()
	if k.failing {
		k.failing = false
		k.log.Info("jwks: keys fetched again", "issuer", k.cfg.Issuer, "url", k.sourceURL())
	}
	k.fromCache, k.staleLog = false, false
	k.metrics.setStale(k.cfg.Issuer, false)
	k.metrics.setReady(k.cfg.Issuer, true)
	k.metrics.succeeded(k.cfg.Issuer, time.Now())
	return nil
}

// sourceURL names the source in logs; k.mu is held.
func (k *Keys) sourceURL() string {
	if k.jwksURL != "" {
		return k.jwksURL
	}
	return k.cfg.DiscoveryURL
}

// useCacheLocked reads the cache after the first fetch failed (fetchErr)
// and, when it is usable, verifies with its keys; k.mu is held.
func (k *Keys) useCacheLocked(fetchErr error) {
	k.cacheTried = true
	now := k.now()
	c, set, err := k.loadCache(now)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return
	case errors.Is(err, errTooStale):
		k.log.Error("jwks: IdP unreachable at start and the cached keys are too old to use; tokens of this issuer get 503 until the IdP answers",
			"issuer", k.cfg.Issuer, "fetch_err", fetchErr, "err", err)
		return
	case err != nil:
		k.log.Error("jwks: IdP unreachable at start and the key cache cannot be used", "issuer", k.cfg.Issuer, "fetch_err", fetchErr, "err", err)
		return
	}
	kids := map[string]bool{}
	for i := range set.Len() {
		if key, ok := set.Key(i); ok && key.KeyID() != "" {
			kids[key.KeyID()] = true
		}
	}
	k.set, k.sum, k.kids = set, sha256.Sum256(c.JWKS), kids
	k.fetchedAt, k.fromCache = c.FetchedAt, true
	if k.jwksURL == "" && k.cfg.JWKSURL == "" {
		k.jwksURL = c.JWKSURL // from the cached discovery: skip a failing discovery
	}
	if e, ok := endpointsOf(c.Discovery); ok && len(c.Discovery) > 0 && !k.hasEndpoints {
		k.endpoints, k.hasEndpoints = e, true
	}
	close(k.changed)
	k.changed = make(chan struct{})
	k.metrics.setReady(k.cfg.Issuer, true)
	k.log.Warn("jwks: IdP unreachable at start; verifying with the cached keys until it answers",
		"issuer", k.cfg.Issuer, "url", k.sourceURL(), "fetched_at", c.FetchedAt.Format(time.RFC3339),
		"age", now.Sub(c.FetchedAt).Round(time.Second).String(), "max_stale", k.maxStale.String(), "fetch_err", fetchErr)
}

func (k *Keys) fetchOnce(ctx context.Context) error {
	k.mu.Lock()
	jwksURL := k.jwksURL
	k.mu.Unlock()
	var disco []byte
	if k.cfg.JWKSURL == "" {
		// Discovery runs on every fetch, so a moved jwks_uri is followed;
		// a failed discovery falls back to the last known jwks_uri.
		u, doc, err := k.discover(ctx)
		switch {
		case err == nil:
			jwksURL, disco = u, doc
		case jwksURL == "":
			return err
		default:
			k.log.Debug("jwks: discovery failed; using the last jwks_uri", "issuer", k.cfg.Issuer, "err", err)
		}
	}
	body, hdr, err := k.get(ctx, jwksURL)
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
	at := k.now()
	k.persist(jwksURL, disco, body, at)
	k.mu.Lock()
	defer k.mu.Unlock()
	k.fetchedAt = at
	k.jwksURL = jwksURL
	if e, ok := endpointsOf(disco); ok && disco != nil {
		k.endpoints, k.hasEndpoints = e, true
	}
	k.refresh = refreshAfter(hdr, time.Now(), k.cfg.MinRefreshInterval, k.cfg.RefreshInterval)
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

// refreshAfter is how long a JWKS response may be kept: its Cache-Control
// max-age (no-cache and no-store: lo), else its Expires, else hi; always
// within lo..hi.
func refreshAfter(h http.Header, now time.Time, lo, hi time.Duration) time.Duration {
	d := hi
	if cc := h.Get("Cache-Control"); cc != "" {
		if tokens, err := httpcc.ParseResponseDirectives(cc); err == nil {
			found := false
			for _, t := range tokens {
				switch strings.ToLower(t.Name) {
				case httpcc.MaxAge:
					if age, err := strconv.ParseUint(t.Value, 10, 64); err == nil && !found {
						d, found = time.Duration(min(age, uint64(hi/time.Second)))*time.Second, true
					}
				case httpcc.NoCache, httpcc.NoStore:
					d, found = lo, true
				}
			}
			if found {
				return min(max(d, lo), hi)
			}
		}
	}
	if e := h.Get("Expires"); e != "" {
		if t, err := http.ParseTime(e); err == nil {
			d = t.Sub(now)
		} else {
			d = lo // an invalid Expires means already expired (RFC 9111 §5.3)
		}
	}
	return min(max(d, lo), hi)
}

type discovery struct {
	Issuer  string `json:"issuer"`
	JWKSURI string `json:"jwks_uri"`
	Endpoints
}

// Endpoints are the parts of a provider's discovery document that a
// relying party's browser login uses (login.oidc).
type Endpoints struct {
	Authorization string `json:"authorization_endpoint"`
	Token         string `json:"token_endpoint"`
	// EndSession is the RP-initiated logout endpoint ("" when none).
	EndSession string `json:"end_session_endpoint"`
	// TokenAuthMethods are token_endpoint_auth_methods_supported.
	TokenAuthMethods []string `json:"token_endpoint_auth_methods_supported"`
}

// endpointsOf reads the endpoints of a discovery document; ok is false
// unless the authorization and token endpoints are http(s) URLs (and the
// end-session endpoint, when given).
func endpointsOf(doc []byte) (Endpoints, bool) {
	var d discovery
	if json.Unmarshal(doc, &d) != nil {
		return Endpoints{}, false
	}
	e := d.Endpoints
	for _, u := range []string{e.Authorization, e.Token, e.EndSession} {
		if u == e.EndSession && u == "" {
			continue
		}
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
			return Endpoints{}, false
		}
	}
	return e, true
}

// Endpoints returns the endpoints of the last good discovery document;
// ok is false until one with valid authorization and token endpoints was
// fetched (or read from the cache), and always with jwks_url.
func (k *Keys) Endpoints() (Endpoints, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.endpoints, k.hasEndpoints
}

// discover returns the jwks_uri and the discovery document.
func (k *Keys) discover(ctx context.Context) (string, []byte, error) {
	body, _, err := k.get(ctx, k.cfg.DiscoveryURL)
	if err != nil {
		return "", nil, fmt.Errorf("discovery %s: %w", k.cfg.DiscoveryURL, err)
	}
	var d discovery
	if err := json.Unmarshal(body, &d); err != nil {
		return "", nil, fmt.Errorf("discovery %s: %w", k.cfg.DiscoveryURL, err)
	}
	// OpenID Connect Discovery §4.3: the issuer must be the one we asked.
	if d.Issuer != k.cfg.Issuer {
		return "", nil, fmt.Errorf("discovery %s: issuer %q, want %q", k.cfg.DiscoveryURL, d.Issuer, k.cfg.Issuer)
	}
	u, err := url.Parse(d.JWKSURI)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", nil, fmt.Errorf("discovery %s: jwks_uri %q is not an http(s) URL", k.cfg.DiscoveryURL, d.JWKSURI)
	}
	return d.JWKSURI, body, nil
}

func (k *Keys) get(ctx context.Context, u string) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, nil, fmt.Errorf("status %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return nil, nil, err
	}
	if len(body) > maxDocument {
		return nil, nil, errors.New("document too large")
	}
	return bytes.TrimSpace(body), resp.Header, nil
}
