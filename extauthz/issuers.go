package extauthz

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/extauthz/jwtauth"
	"github.com/kailash-gw/kailash/extauthz/oidc"
	"github.com/kailash-gw/kailash/internal/config"
)

// identityVerifier is what a tenant's token check needs: a *jwtauth.Verifier for a
// tenant with only jwt, a byIssuer for a tenant with issuers.
type identityVerifier = oidc.TokenVerifier[*envoyauth.Identity]

// issuerKeys is one key source (an issuers[] entry or a jwt.jwks_url),
// shared by every tenant that uses it and kept across reloads while its
// settings are unchanged.
type issuerKeys struct {
	keys   *oidc.Keys
	cancel context.CancelFunc // stops its background refresh; nil until started
}

// issuerRegistry holds the issuers' key sources in force (their refresh
// loops run on the server's background context).
type issuerRegistry struct {
	mu      sync.Mutex // guards the fields and every issuerKeys.cancel
	metrics *oidc.Metrics
	running map[oidc.Config]*issuerKeys
	// cacheDir and maxStale are authz.jwks_cache of the config being built
	// (sources created since use them).
	cacheDir string
	maxStale time.Duration
}

// setCache takes authz.jwks_cache from cfg for the key sources created next.
func (r *issuerRegistry) setCache(cfg *config.Config) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cacheDir, r.maxStale = cfg.JWKSCacheDir(), cfg.JWKSMaxStale()
}

func oidcConfig(o config.OIDCIssuer) oidc.Config {
	return oidc.Config{
		Issuer: o.Issuer, JWKSURL: o.JWKSURL.String(), DiscoveryURL: o.DiscoveryURL.String(),
		RefreshInterval: o.RefreshInterval, MinRefreshInterval: o.MinRefreshInterval, MinRefetch: o.MinRefetch,
		InitialBackoff: o.InitialBackoff, MaxBackoff: o.MaxBackoff, Timeout: o.Timeout,
	}
}

// jwtKeysConfig is the key source of a tenant's jwt.jwks_url: the same
// mechanism as issuers[] (one Keys per distinct source, shared).
func jwtKeysConfig(j config.JWT) oidc.Config {
	k := j.KeyRefresh
	return oidc.Config{
		Issuer: j.Issuer, JWKSURL: j.JWKSURL.String(),
		RefreshInterval: k.RefreshInterval, MinRefreshInterval: k.MinRefreshInterval, MinRefetch: k.MinRefetch,
		InitialBackoff: k.InitialBackoff, MaxBackoff: k.MaxBackoff, Timeout: k.Timeout,
	}
}

// jwtURLKeys returns the key source of the tenant's jwt.jwks_url for the
// snapshot being built (see keysFor).
func (s *Server) jwtURLKeys(snap *snapshot, j config.JWT) (jwtauth.KeySource, error) {
	ik, err := s.keysFor(snap, jwtKeysConfig(j))
	if err != nil {
		return nil, fmt.Errorf("jwt.jwks_url: %w", err)
	}
	return ik.keys, nil
}

// issuerKeysFor returns the key source of o for the snapshot being built.
func (s *Server) issuerKeysFor(snap *snapshot, o config.OIDCIssuer) (*issuerKeys, error) {
	return s.keysFor(snap, oidcConfig(o))
}

// keysFor returns the key source of key for the snapshot being built: the
// one in force when its settings are unchanged, else a new one (started by
// startIssuers once the snapshot is in force).
func (s *Server) keysFor(snap *snapshot, key oidc.Config) (*issuerKeys, error) {
	if ik := snap.issuers[key]; ik != nil {
		return ik, nil
	}
	r := &s.issuers
	r.mu.Lock()
	defer r.mu.Unlock()
	ik := r.running[key]
	if ik == nil {
		if r.metrics == nil {
			r.metrics = oidc.NewMetrics(s.reg)
		}
		// Rate limiting of fetches runs on real time, not on Options.Now
		// (the token-validation clock).
		k, err := oidc.New(key, oidc.WithLogger(s.log), oidc.WithMetrics(r.metrics), oidc.WithCache(r.cacheDir, r.maxStale))
		if err != nil {
			return nil, err
		}
		ik = &issuerKeys{keys: k}
	}
	if snap.issuers == nil {
		snap.issuers = map[oidc.Config]*issuerKeys{}
	}
	snap.issuers[key] = ik
	return ik, nil
}

// startIssuers runs the key refresh of the issuers of snap, which is now in
// force, and stops those no tenant trusts any more.
func (s *Server) startIssuers(snap *snapshot) {
	r := &s.issuers
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ik := range snap.issuers {
		if ik.cancel == nil {
			ctx, cancel := context.WithCancel(s.bg)
			ik.cancel = cancel
			go ik.keys.Run(ctx)
		}
	}
	for key, ik := range r.running {
		if snap.issuers[key] != ik {
			ik.cancel()
		}
	}
	r.running = snap.issuers
}

// refreshing wraps a verifier whose keys come from a URL so that a token
// with an unknown kid triggers a (rate-limited, shared) refetch.
func refreshing(v *jwtauth.Verifier) identityVerifier {
	if k, ok := v.KeySource().(*oidc.Keys); ok {
		return oidc.Refreshing[*envoyauth.Identity]{Verifier: v, Keys: k}
	}
	return v
}

// tenantVerifier combines the tenant's legacy jwt verifier (nil when the
// tenant has no jwt section) with one verifier per issuer, routed by the
// token's iss. A tenant without issuers keeps its jwt verifier alone.
func (s *Server) tenantVerifier(snap *snapshot, t config.Tenant, legacy *jwtauth.Verifier) (identityVerifier, error) {
	if len(t.Issuers) == 0 {
		if legacy == nil {
			return nil, fmt.Errorf("no jwt verifier and no issuers")
		}
		return refreshing(legacy), nil
	}
	vs := make(map[string]oidc.TokenVerifier[*envoyauth.Identity], len(t.Issuers)+1)
	if legacy != nil {
		vs[t.JWT.Issuer] = refreshing(legacy)
	}
	for i, o := range t.Issuers {
		ik, err := s.issuerKeysFor(snap, o)
		if err != nil {
			return nil, fmt.Errorf("issuers[%d]: %w", i, err)
		}
		v, err := jwtauth.NewVerifier(t.ID, config.JWT{Issuer: o.Issuer, Audiences: o.Audiences, ClockSkew: o.ClockSkew,
			RolesClaim: o.RolesClaim, TenantClaim: o.TenantClaim, RequireTenantClaim: o.RequireTenantClaim}, ik.keys, jwtauth.VerifierOptions{Now: s.now, CacheSize: s.cacheSize})
		if err != nil {
			return nil, fmt.Errorf("issuers[%d]: %w", i, err)
		}
		vs[o.Issuer] = oidc.Refreshing[*envoyauth.Identity]{Verifier: v, Keys: ik.keys}
	}
	return byIssuer{oidc.ByIssuer[*envoyauth.Identity]{Verifiers: vs, Unknown: unknownIssuer}}, nil
}

// byIssuer keeps the reasons of a single verifier for what routing cannot
// tell: no token at all, and a token with no readable iss.
type byIssuer struct {
	oidc.ByIssuer[*envoyauth.Identity]
}

func (b byIssuer) Verify(ctx context.Context, token string) (*envoyauth.Identity, error) {
	if token == "" {
		return nil, &envoyauth.AuthError{Reason: envoyauth.ReasonMissingToken}
	}
	return b.ByIssuer.Verify(ctx, token)
}

func unknownIssuer(iss string) error {
	if iss == "" {
		return &envoyauth.AuthError{Reason: envoyauth.ReasonMalformed, Detail: "no readable iss claim"}
	}
	return &envoyauth.AuthError{Reason: envoyauth.ReasonWrongIssuer, Detail: fmt.Sprintf("iss %q is not trusted by this tenant", iss)}
}
