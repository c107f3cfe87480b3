package oidc

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

// The disk cache keeps the last good JWKS (and discovery document) of a
// source so that authz restarted while the IdP is down keeps verifying with
// the keys it had. Rules:
//   - Written after every successful fetch whose JWKS parsed with at least
//     one key, atomically (temp file + rename, fsync), mode 0600 in a 0700
//     directory. It holds public keys only.
//   - Read only when the first fetch after start fails (a reachable IdP
//     always wins), and only if it names the same issuer and source, is not
//     writable by group or others, and is younger than MaxStale.
//   - MaxStale also bounds keys kept in memory through an outage: keys last
//     fetched longer ago are not used (Keys answers ErrUnavailable: 503).

// WithCache persists the last good keys in dir ("" persists nothing) and
// stops using keys last fetched more than maxStale ago (0: no bound).
func WithCache(dir string, maxStale time.Duration) Option {
	return func(k *Keys) { k.cacheDir, k.maxStale = dir, maxStale }
}

// cacheFile is what the cache holds for one source.
type cacheFile struct {
	Issuer    string          `json:"issuer"`
	Source    string          `json:"source"` // the configured jwks_url or discovery URL
	JWKSURL   string          `json:"jwks_uri"`
	FetchedAt time.Time       `json:"fetched_at"`
	Discovery json.RawMessage `json:"discovery,omitempty"`
	JWKS      json.RawMessage `json:"jwks"`
}

// source names the configured source (the cache is keyed by it).
func (k *Keys) source() string {
	if k.cfg.JWKSURL != "" {
		return k.cfg.JWKSURL
	}
	return k.cfg.DiscoveryURL
}

// cachePath is the file of this source: one per issuer and source URL.
func (k *Keys) cachePath() string {
	sum := sha256.Sum256([]byte(k.cfg.Issuer + "\n" + k.source()))
	return filepath.Join(k.cacheDir, "jwks-"+hex.EncodeToString(sum[:12])+".json")
}

// persist writes the cache file; a failure is logged, never fatal.
func (k *Keys) persist(jwksURL string, discovery, jwks []byte, at time.Time) {
	if k.cacheDir == "" {
		return
	}
	if err := k.writeCache(cacheFile{Issuer: k.cfg.Issuer, Source: k.source(), JWKSURL: jwksURL,
		FetchedAt: at.UTC(), Discovery: discovery, JWKS: jwks}); err != nil {
		k.log.Warn("jwks: cannot write the key cache; a restart during an IdP outage will not have these keys",
			"issuer", k.cfg.Issuer, "dir", k.cacheDir, "err", err)
	}
}

func (k *Keys) writeCache(c cacheFile) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(k.cacheDir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(k.cacheDir, ".jwks-*.tmp") // mode 0600
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, k.cachePath())
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

// errTooStale: the cached keys are older than MaxStale.
var errTooStale = errors.New("older than max_stale")

// loadCache reads the cache file of this source and its key set.
func (k *Keys) loadCache(now time.Time) (cacheFile, jwk.Set, error) {
	var c cacheFile
	p := k.cachePath()
	st, err := os.Stat(p)
	if err != nil {
		return c, nil, err
	}
	if st.Mode().Perm()&0o022 != 0 {
		return c, nil, fmt.Errorf("%s is writable by group or others (%s): not trusted", p, st.Mode().Perm())
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return c, nil, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, nil, fmt.Errorf("%s: %w", p, err)
	}
	if c.Issuer != k.cfg.Issuer || c.Source != k.source() {
		return c, nil, fmt.Errorf("%s is for issuer %q at %q, not %q at %q", p, c.Issuer, c.Source, k.cfg.Issuer, k.source())
	}
	if k.maxStale > 0 && now.Sub(c.FetchedAt) > k.maxStale {
		return c, nil, fmt.Errorf("%s: keys fetched %s ago (at %s): %w (%s)", p, now.Sub(c.FetchedAt).Round(time.Second),
			c.FetchedAt.Format(time.RFC3339), errTooStale, k.maxStale)
	}
	set, err := jwk.Parse(c.JWKS)
	if err != nil {
		return c, nil, fmt.Errorf("%s: %w", p, err)
	}
	if set.Len() == 0 {
		return c, nil, fmt.Errorf("%s: no keys", p)
	}
	return c, set, nil
}
