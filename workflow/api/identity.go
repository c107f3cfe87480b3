package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/kailash-gw/kailash/workflow"
)

const (
	jwksTTL        = 5 * time.Minute  // a key set is re-read at most this old
	jwksMinRefresh = 10 * time.Second // an unknown kid re-reads at most this often
	identitySkew   = 30 * time.Second
)

// verifier checks identity tokens against a JWKS read from a file or URL.
// A failed re-read keeps the last good key set.
type verifier struct {
	source   string // file path or http(s) URL
	audience string
	client   *http.Client

	mu      sync.Mutex // guards keys and fetched
	keys    jwk.Set
	fetched time.Time
}

func newVerifier(source, audience string) (*verifier, error) {
	v := &verifier{source: source, audience: audience, client: &http.Client{Timeout: 5 * time.Second}}
	if !v.isURL() {
		// A file must be readable at start-up; a URL may come up later.
		if _, err := v.keySet(context.Background(), false); err != nil {
			return nil, err
		}
	}
	return v, nil
}

func (v *verifier) isURL() bool {
	return strings.HasPrefix(v.source, "https://") || strings.HasPrefix(v.source, "http://")
}

// keySet returns the cached keys, re-reading them when stale or when
// refresh is asked (an unknown kid) and the last read is old enough.
func (v *verifier) keySet(ctx context.Context, refresh bool) (jwk.Set, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	age := time.Since(v.fetched)
	if v.keys != nil && age < jwksTTL && (!refresh || age < jwksMinRefresh) {
		return v.keys, nil
	}
	var set jwk.Set
	var err error
	if v.isURL() {
		set, err = jwk.Fetch(ctx, v.source, jwk.WithHTTPClient(v.client))
	} else {
		var b []byte
		if b, err = os.ReadFile(v.source); err == nil {
			set, err = jwk.Parse(b)
		}
	}
	if err != nil {
		if v.keys != nil {
			return v.keys, nil // keep the last good keys
		}
		return nil, fmt.Errorf("runner.identity_jwks: %w", err)
	}
	v.keys, v.fetched = set, time.Now()
	return set, nil
}

// identity is a verified caller plus what the token says besides: its
// groups and directory/IdP attributes (department, clearance, ...), which
// the event streams' policy decision reads.
type identity struct {
	workflow.Caller
	Groups     []string
	Attributes map[string]any
}

// verify checks the token's signature, audience and expiry (exp is
// required) and returns the caller its claims name: tenant, sub, roles.
func (v *verifier) verify(ctx context.Context, token string) (workflow.Caller, error) {
	id, err := v.verifyIdentity(ctx, token)
	return id.Caller, err
}

// verifyIdentity is verify with the token's groups and attributes.
func (v *verifier) verifyIdentity(ctx context.Context, token string) (identity, error) {
	set, err := v.keySet(ctx, false)
	if err != nil {
		return identity{}, err
	}
	parse := func(set jwk.Set) (jwt.Token, error) {
		return jwt.ParseString(token,
			jwt.WithKeySet(set, jws.WithInferAlgorithmFromKey(true)),
			jwt.WithValidate(true),
			jwt.WithAudience(v.audience),
			jwt.WithRequiredClaim("exp"),
			jwt.WithAcceptableSkew(identitySkew),
		)
	}
	tok, err := parse(set)
	if err != nil && !errors.Is(err, jwt.ErrTokenExpired()) && strings.Contains(err.Error(), "key") {
		// Perhaps a rotated key: re-read once (rate limited) and retry.
		if set2, ferr := v.keySet(ctx, true); ferr == nil && set2 != set {
			tok, err = parse(set2)
		}
	}
	if err != nil {
		return identity{}, err
	}
	c := workflow.Caller{User: tok.Subject()}
	var id identity
	if t, ok := tok.Get("tenant"); ok {
		c.Tenant, _ = t.(string)
	}
	if r, ok := tok.Get("roles"); ok {
		switch r := r.(type) {
		case []any:
			for _, x := range r {
				if s, ok := x.(string); ok {
					c.Roles = append(c.Roles, s)
				}
			}
		case []string:
			c.Roles = r
		case string:
			c.Roles = strings.FieldsFunc(r, func(r rune) bool { return r == ',' || r == ' ' })
		}
	}
	if a, ok := tok.Get("attributes"); ok {
		if m, ok := a.(map[string]any); ok {
			c.Clearance, _ = m["clearance"].(string)
			id.Attributes = m
		}
	}
	if g, ok := tok.Get("groups"); ok {
		if l, ok := g.([]any); ok {
			for _, x := range l {
				if s, ok := x.(string); ok {
					id.Groups = append(id.Groups, s)
				}
			}
		}
	}
	if c.Tenant == "" || c.User == "" {
		return identity{}, errors.New("token lacks the tenant or sub claim")
	}
	id.Caller = c
	return id, nil
}
