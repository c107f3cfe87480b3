// Package devtoken mints development bearer tokens signed with a PEM private
// key (the example tenant trusts examples/keys/dev.jwks.json). It is for
// demos and tests: production tokens come from a real identity provider.
package devtoken

import (
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// Claims describes the token to mint.
type Claims struct {
	Issuer   string
	Audience []string
	Tenant   string
	Subject  string
	Roles    []string
	TTL      time.Duration
	// Extra claims (department, clearance, ...).
	Extra map[string]any
	// NotBefore, when set, overrides "now" as nbf (tests of clock handling).
	Now time.Time
}

// Key parses a PEM private key and gives it the RFC 7638 thumbprint as kid,
// which is also how examples/keys/dev.jwks.json names the public half.
func Key(pem []byte) (jwk.Key, error) {
	k, err := jwk.ParseKey(pem, jwk.WithPEM(true))
	if err != nil {
		return nil, fmt.Errorf("parse signing key: %w", err)
	}
	pub, err := k.PublicKey()
	if err != nil {
		return nil, err
	}
	tp, err := pub.Thumbprint(cryptoSHA256)
	if err != nil {
		return nil, err
	}
	if err := k.Set(jwk.KeyIDKey, b64(tp)); err != nil {
		return nil, err
	}
	return k, nil
}

// Mint signs the claims with key (ES256 for EC keys, RS256 for RSA).
func Mint(key jwk.Key, c Claims) (string, error) {
	now := c.Now
	if now.IsZero() {
		now = time.Now()
	}
	if c.TTL == 0 {
		c.TTL = time.Hour
	}
	b := jwt.NewBuilder().
		Issuer(c.Issuer).
		Audience(c.Audience).
		Subject(c.Subject).
		IssuedAt(now).
		NotBefore(now).
		Expiration(now.Add(c.TTL))
	if c.Tenant != "" {
		b = b.Claim("tenant", c.Tenant)
	}
	if c.Roles != nil {
		b = b.Claim("roles", c.Roles)
	}
	for k, v := range c.Extra {
		b = b.Claim(k, v)
	}
	tok, err := b.Build()
	if err != nil {
		return "", err
	}
	alg := jwa.ES256
	if key.KeyType() == "RSA" {
		alg = jwa.RS256
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(alg, key, jws.WithProtectedHeaders(typHeader())))
	if err != nil {
		return "", err
	}
	return string(signed), nil
}

func typHeader() jws.Headers {
	h := jws.NewHeaders()
	_ = h.Set(jws.TypeKey, "JWT")
	return h
}
