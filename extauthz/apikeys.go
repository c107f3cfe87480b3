package extauthz

import (
	"context"
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
	f, err := apikey.ReadFile(s.apiKeysFile)
	if err != nil {
		return err
	}
	s.apiKeys.Replace(f)
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
// keys. A change is a new file (WriteFile renames one into place, so
// also a rewrite of the same size within the file system's timestamp
// granularity, as a rotation is), or a new size or time.
func (s *Server) followAPIKeys(ctx context.Context) {
	if s.apiKeysRedis != nil {
		s.followRedisKeys(ctx)
		return
	}
	last, _ := os.Stat(s.apiKeysFile)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fi, err := os.Stat(s.apiKeysFile)
		if err != nil {
			continue
		}
		if last != nil && os.SameFile(last, fi) && fi.ModTime().Equal(last.ModTime()) && fi.Size() == last.Size() {
			continue
		}
		last = fi
		if err := s.loadAPIKeys(); err != nil {
			s.log.Error("api keys file rejected; the last good keys keep serving", "file", s.apiKeysFile, "err", err)
			continue
		}
		s.log.Info("api keys reloaded", "file", s.apiKeysFile, "keys", s.apiKeys.Len())
	}
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
