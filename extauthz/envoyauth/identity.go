package envoyauth

import (
	"crypto/sha256"
	"encoding/json"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Reason is a stable code for why a request is unauthenticated. Reasons are
// metric labels and appear in 401 responses, so they never change meaning.
type Reason string

// The identity failure reasons.
const (
	ReasonMissingToken  Reason = "missing_token"
	ReasonMalformed     Reason = "malformed"
	ReasonAlgNone       Reason = "alg_none"
	ReasonAlgNotAllowed Reason = "alg_not_allowed"
	ReasonUnknownKID    Reason = "unknown_kid"
	ReasonBadSignature  Reason = "bad_signature"
	ReasonExpired       Reason = "expired"
	ReasonNotYetValid   Reason = "not_yet_valid"
	ReasonWrongIssuer   Reason = "wrong_issuer"
	ReasonWrongAudience Reason = "wrong_audience"
	ReasonWrongTenant   Reason = "wrong_tenant"
	// ReasonMissingTenantClaim: the token has no tenant claim and the
	// tenant requires one (jwt.require_tenant_claim).
	ReasonMissingTenantClaim Reason = "missing_tenant_claim"
)

// AuthError is an identity failure: the caller gets a 401 naming Reason.
// Detail is for logs; it never contains the token.
type AuthError struct {
	Reason Reason
	Detail string
}

func (e *AuthError) Error() string {
	if e.Detail == "" {
		return "unauthenticated: " + string(e.Reason)
	}
	return "unauthenticated: " + string(e.Reason) + ": " + e.Detail
}

// Identity is a verified caller. It is shared (the verified-token cache hands
// out the same value to concurrent requests): never modify one.
type Identity struct {
	Subject string
	Tenant  string
	Issuer  string
	Roles   []string
	Groups  []string
	// Attributes are the token's other claims (department, clearance,
	// location, ...), as decoded JSON (numbers are json.Number).
	Attributes map[string]any
	// Method is how the caller authenticated: "jwt".
	Method    string
	ExpiresAt time.Time

	// term caches the identity's policy input (IdentityTerm): a cached
	// token's identity is converted once, not on every request.
	term atomic.Pointer[ast.Term]
	// digest caches ClaimsDigest. Identities are not modified once built.
	digest atomic.Pointer[[32]byte]
}

// ClaimsDigest is a SHA-256 of what an identity token says about id (its
// subject, method, roles, groups and attributes), computed once per
// Identity: the identity-token minter keys its cache by it.
func (id *Identity) ClaimsDigest() [32]byte {
	if d := id.digest.Load(); d != nil {
		return *d
	}
	d := claimsDigest(id)
	id.digest.Store(d)
	return *d
}

func claimsDigest(id *Identity) *[32]byte {
	h := sha256.New()
	w := func(s string) { h.Write([]byte(s)); h.Write([]byte{0}) }
	w(id.Subject)
	w(id.Method)
	w(strings.Join(id.Roles, "\x01"))
	w(strings.Join(id.Groups, "\x01"))
	if len(id.Attributes) > 0 {
		names := make([]string, 0, len(id.Attributes))
		for k := range id.Attributes {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			b, _ := json.Marshal(id.Attributes[k])
			w(k)
			w(string(b))
		}
	}
	var out [32]byte
	h.Sum(out[:0])
	return &out
}
