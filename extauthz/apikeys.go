package extauthz

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/netip"
	"os"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/kailash-gw/kailash/extauthz/apikey"
	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/extauthz/login"
)

// apiKeyHeader is the header an API key may come in besides
// "Authorization: ApiKey ...".
const apiKeyHeader = "x-api-key"

// presentedAPIKey is the API key a request carries, and the header it came
// in; "" when none.
func presentedAPIKey(headers map[string]string) (key, header string) {
	if a := headers["authorization"]; len(a) > 7 && strings.EqualFold(a[:7], "apikey ") {
		return strings.TrimSpace(a[7:]), "authorization"
	}
	if k := headers[apiKeyHeader]; k != "" {
		return strings.TrimSpace(k), apiKeyHeader
	}
	return "", ""
}

// clientIP is the request's client address (attributes.source, the
// trusted one: see trustedSource).
func clientIP(req *authv3.CheckRequest) netip.Addr {
	a, _ := netip.ParseAddr(req.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress())
	return a
}

// loadAPIKeys reads authz.api_keys_file (or sessions.redis) into the store.
func (s *Server) loadAPIKeys() error {
	s.apiKeysMu.Lock()
	defer s.apiKeysMu.Unlock()
	return s.loadAPIKeysLocked()
}

// loadAPIKeysLocked is loadAPIKeys with s.apiKeysMu held.
func (s *Server) loadAPIKeysLocked() error {
	if s.apiKeysRedis != nil {
		ctx, cancel := context.WithTimeout(s.bg, 5*time.Second)
		defer cancel()
		f, v, err := s.apiKeysRedis.Load(ctx)
		if err != nil {
			return err
		}
		s.apiKeys.Replace(f)
		s.apiKeysVersion = v
		return nil
	}
	// The file as read here is what the follower compares with next.
	fi, _ := os.Stat(s.apiKeysFile)
	b, err := os.ReadFile(s.apiKeysFile)
	var f apikey.File
	switch {
	case errors.Is(err, os.ErrNotExist):
		fi, b = nil, nil // no keys; the file's appearance is a change
	case err != nil:
		return err
	default:
		if f, err = apikey.ParseFile(s.apiKeysFile, b); err != nil {
			return err
		}
	}
	s.apiKeys.Replace(f)
	s.keysWatch.loaded(fi, b, time.Now())
	return nil
}

// followRedisKeys re-reads the keys when another writer changed them
// (their version) and publishes this replica's last uses, every second,
// until ctx ends.
func (s *Server) followRedisKeys(ctx context.Context) {
	pushed := map[string]time.Time{}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if v, err := s.apiKeysRedis.Version(rctx); err == nil && v != s.keysVersion() {
			if err := s.loadAPIKeys(); err != nil {
				s.log.Error("api keys in Redis not read; the last good keys keep serving", "err", err)
			} else {
				s.log.Info("api keys reloaded from sessions.redis", "keys", s.apiKeys.Len(), "version", v)
			}
		}
		for id, at := range s.apiKeys.LastUsedAll() {
			if at.After(pushed[id].Add(time.Minute)) { // at most once a minute per key
				if err := s.apiKeysRedis.Touch(rctx, id, at); err == nil {
					pushed[id] = at
				}
			}
		}
		cancel()
	}
}

// keysVersion is the version of the Redis keys in force.
func (s *Server) keysVersion() int64 {
	s.apiKeysMu.Lock()
	defer s.apiKeysMu.Unlock()
	return s.apiKeysVersion
}

// followAPIKeys re-reads the keys file when it changes (checked every
// second) until ctx ends; a file that does not parse keeps the last good
// keys. See keysFileWatch for what counts as a change.
func (s *Server) followAPIKeys(ctx context.Context) {
	if s.apiKeysRedis != nil {
		s.followRedisKeys(ctx)
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		var now time.Time
		select {
		case <-ctx.Done():
			return
		case now = <-t.C:
		}
		s.apiKeysMu.Lock()
		changed := s.keysWatch.changed(s.apiKeysFile, now)
		var err error
		if changed {
			err = s.loadAPIKeysLocked()
		}
		s.apiKeysMu.Unlock()
		if !changed {
			continue
		}
		if err != nil {
			s.log.Error("api keys file rejected; the last good keys keep serving", "file", s.apiKeysFile, "err", err)
			continue
		}
		s.log.Info("api keys reloaded", "file", s.apiKeysFile, "keys", s.apiKeys.Len())
	}
}

// keysFileWatch tells whether the keys file changed since it was last
// read (loaded) or looked at (changed).
// A new file (inode), size or modification time is a change. The same
// stat is no proof, though: two writes within one tick of the file
// system's clock (a create, then a rotate of the same size) can leave the
// same time and size, and the inode of a file renamed over is often
// reused at once. So until a look comes a full second after the file's
// time — when a later write must show a later time — the content's digest
// is compared too (git's "racy clean" rule).
type keysFileWatch struct {
	last    os.FileInfo
	digest  [sha256.Size]byte
	settled bool // looked at a second or more after last's time: the stat suffices
}

func (w *keysFileWatch) changed(path string, now time.Time) bool {
	fi, err := os.Stat(path)
	if err != nil {
		return false // gone: the last good keys keep serving
	}
	same := w.last != nil && os.SameFile(w.last, fi) && fi.ModTime().Equal(w.last.ModTime()) && fi.Size() == w.last.Size()
	if same && w.settled {
		return false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	changed := !same || sha256.Sum256(b) != w.digest
	w.loaded(fi, b, now)
	return changed
}

// loaded records the file as read at now: its stat fi (nil: there was
// none) and content b.
func (w *keysFileWatch) loaded(fi os.FileInfo, b []byte, now time.Time) {
	w.last, w.digest = fi, sha256.Sum256(b)
	w.settled = fi != nil && now.Sub(fi.ModTime()) >= time.Second
}

// verifyAPIKey is the identity step for an API key.
func (s *Server) verifyAPIKey(key, tenant string, req *authv3.CheckRequest) (*envoyauth.Identity, error) {
	return s.apiKeys.Verify(key, tenant, clientIP(req), s.now())
}

// serviceAccounts is the API key check for POST /auth/token; nil without
// API keys.
func (s *Server) serviceAccounts() login.ServiceAccounts {
	if s.apiKeys == nil {
		return nil
	}
	return func(key, tenant string, client netip.Addr) (*envoyauth.Identity, error) {
		return s.apiKeys.Verify(key, tenant, client, s.now())
	}
}

// APIKeys is the admin API's view of the keys this server verifies
// against (the file or sessions.redis); nil without API keys. A write
// through it is in force here at once, and on other replicas when they
// next read (the file or Redis's version, every second).
func (s *Server) APIKeys() apikey.Keys {
	if s.apiKeys == nil || (s.apiKeysFile == "" && s.apiKeysRedis == nil) {
		return nil
	}
	return serverKeys{s}
}

// HasTenant reports whether tenant id is in force.
func (s *Server) HasTenant(id string) bool {
	_, ok := s.snap.Load().tenants[id]
	return ok
}

// serverKeys is APIKeys.
type serverKeys struct{ s *Server }

func (k serverKeys) List(ctx context.Context) ([]apikey.Key, error) {
	if r := k.s.apiKeysRedis; r != nil {
		f, _, err := r.Load(ctx)
		return f.Keys, err
	}
	f, err := apikey.ReadFile(k.s.apiKeysFile)
	return f.Keys, err
}

// Put writes key to the store, then reads the store into force here.
func (k serverKeys) Put(ctx context.Context, key apikey.Key) error {
	s := k.s
	s.apiKeysMu.Lock()
	defer s.apiKeysMu.Unlock()
	var err error
	if s.apiKeysRedis != nil {
		err = s.apiKeysRedis.Put(ctx, key)
	} else {
		err = apikey.UpdateFile(s.apiKeysFile, func(f *apikey.File) error { f.Upsert(key); return nil })
	}
	if err != nil {
		return err
	}
	if err := s.loadAPIKeysLocked(); err != nil {
		// Written but not read back: the follower retries within a second.
		s.log.Error("api keys written but not reloaded; the follower retries", "err", err)
	}
	return nil
}

// LastUsed is each key's last use here, or by any replica (Redis),
// whichever is later.
func (k serverKeys) LastUsed(ctx context.Context) (map[string]time.Time, error) {
	out := k.s.apiKeys.LastUsedAll()
	if r := k.s.apiKeysRedis; r != nil {
		shared, err := r.LastUsed(ctx)
		if err != nil {
			return out, err
		}
		for id, at := range shared {
			if at.After(out[id]) {
				out[id] = at
			}
		}
	}
	return out, nil
}
