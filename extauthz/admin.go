package extauthz

import (
	"context"
	"errors"
	"net/http"

	"github.com/kailash-gw/kailash/internal/wire"
)

// RouteHTTP adds routes to the HTTP port (authz.http), such as the tenant
// admin API. Call it before Serve.
func (s *Server) RouteHTTP(register func(*http.ServeMux)) { s.routes = append(s.routes, register) }

// VerifyCaller is who sent a request that came through Envoy with
// ext_authz's allow: the identity token (wire.HeaderIdentity) this server
// (or a replica sharing its key ring) signed on allow, checked here —
// signature, issuer, audience, lifetime. A request without one did not
// pass the policy and is refused.
func (s *Server) VerifyCaller(ctx context.Context, r *http.Request) (tenant, subject string, err error) {
	if s.auth == nil {
		return "", "", errors.New("no identity tokens in drop-in mode")
	}
	tok := r.Header.Get(wire.HeaderIdentity)
	if tok == "" {
		return "", "", errors.New("no identity token: the request did not pass ext_authz")
	}
	return s.auth.VerifyIdentityToken(ctx, tok)
}
