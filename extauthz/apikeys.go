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
		if v, err := s.apiKeysRedis.Version(rctx); err == nil && v != s.apiKeysVersion {
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

// followAPIKeys re-reads the keys file when it changes (checked every
// second) until ctx ends; a file that does not parse keeps the last good
// keys.
func (s *Server) followAPIKeys(ctx context.Context) {
	if s.apiKeysRedis != nil {
		s.followRedisKeys(ctx)
		return
	}
	var mod time.Time
	var size int64 = -1
	if fi, err := os.Stat(s.apiKeysFile); err == nil {
		mod, size = fi.ModTime(), fi.Size()
	}
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
		if fi.ModTime().Equal(mod) && fi.Size() == size {
			continue
		}
		mod, size = fi.ModTime(), fi.Size()
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
