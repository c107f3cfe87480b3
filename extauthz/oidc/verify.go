package oidc

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
)

// TokenVerifier is what *extauthz.Verifier provides (I is *extauthz.Identity).
// It is declared here so this package need not import extauthz, which
// imports it.
type TokenVerifier[I any] interface {
	Verify(ctx context.Context, token string) (I, error)
}

// Refreshing wraps the verifier of one issuer: when verification fails and
// the token names a kid that the key set does not hold, it asks Keys for a
// (rate-limited) refetch and, if the kid arrived, verifies once more. This
// is how a key rotation at the IdP is picked up before the next scheduled
// refresh.
type Refreshing[I any] struct {
	Verifier TokenVerifier[I]
	Keys     *Keys
}

// Verify implements TokenVerifier.
func (r Refreshing[I]) Verify(ctx context.Context, token string) (I, error) {
	id, err := r.Verifier.Verify(ctx, token)
	if err == nil || !r.Keys.Ready() {
		return id, err
	}
	var hdr struct {
		Kid string `json:"kid"`
	}
	if !peek(token, 0, &hdr) || hdr.Kid == "" || r.Keys.Has(hdr.Kid) {
		return id, err
	}
	if !r.Keys.RefreshForKID(ctx, hdr.Kid) {
		return id, err
	}
	return r.Verifier.Verify(ctx, token)
}

// ByIssuer routes a token to the verifier of its (unverified) iss claim;
// that verifier then checks everything, iss included. It serves a tenant
// with several issuers. Unknown builds the error for a token whose issuer
// has no verifier (an identity failure: 401).
type ByIssuer[I any] struct {
	Verifiers map[string]TokenVerifier[I]
	Unknown   func(iss string) error
}

// Verify implements TokenVerifier.
func (b ByIssuer[I]) Verify(ctx context.Context, token string) (I, error) {
	var claims struct {
		Iss string `json:"iss"`
	}
	peek(token, 1, &claims)
	if v, ok := b.Verifiers[claims.Iss]; ok {
		return v.Verify(ctx, token)
	}
	var zero I
	return zero, b.Unknown(claims.Iss)
}

// peek decodes segment i of a compact JWS without verifying anything.
func peek(token string, i int, v any) bool {
	parts := strings.SplitN(token, ".", 4)
	if len(parts) != 3 || len(parts[i]) > 1<<16 {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		return false
	}
	return json.Unmarshal(b, v) == nil
}
