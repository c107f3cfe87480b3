// Package explain keeps what is known about recent refusals, for "why was
// this request denied": the identity step (which issuer, which check
// failed), the policy step (bundle revision and the rules' values), the
// rate-limit step (quota, limit, window, count) and the edge step (what
// Envoy answered and which of its filters did). Records are bounded (the
// oldest is forgotten first) and found by decision id or request id.
package explain

import (
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/open-policy-agent/opa/v1/ast"
)

// Record is one refused (or failed) request.
type Record struct {
	DecisionID string    `json:"decision_id,omitempty"`
	RequestID  string    `json:"request_id,omitempty"`
	TraceID    string    `json:"trace_id,omitempty"`
	Time       time.Time `json:"time"`
	Tenant     string    `json:"tenant,omitempty"`
	Method     string    `json:"method,omitempty"`
	Host       string    `json:"host,omitempty"`
	Path       string    `json:"path,omitempty"` // without its query string
	ClientIP   string    `json:"client_ip,omitempty"`
	// Status is the HTTP status the client was answered (from Envoy's
	// access log; 0 until it arrives).
	Status int `json:"status,omitempty"`
	// Outcome is authz's: allow, deny, unauthenticated or error; empty
	// when the request never reached authz.
	Outcome string `json:"outcome,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Summary is one sentence: why.
	Summary string `json:"summary"`

	Identity  *IdentityStep   `json:"identity,omitempty"`
	Policy    *PolicyStep     `json:"policy,omitempty"`
	RateLimit []RateLimitStep `json:"rate_limit,omitempty"`
	Edge      *EdgeStep       `json:"edge,omitempty"`
}

// IdentityStep is what the identity check found.
type IdentityStep struct {
	// Result is "ok" or "failed".
	Result string `json:"result"`
	// Credential is what was presented: bearer, session_cookie or none.
	Credential string `json:"credential"`
	// Issuer is the verified issuer; when verification failed, the one the
	// token claims (unverified), if it could be read.
	Issuer  string `json:"issuer,omitempty"`
	Subject string `json:"subject,omitempty"`
	// Check is the check that failed (the reason code: expired,
	// bad_issuer, bad_audience, unknown_kid, bad_algorithm, ...).
	Check  string `json:"check,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// PolicyStep is the policy decision.
type PolicyStep struct {
	Decision string `json:"decision"`
	// Revision is the bundle revision that decided.
	Revision string `json:"revision,omitempty"`
	Allowed  bool   `json:"allowed"`
	DryRun   bool   `json:"dry_run,omitempty"`
	Error    string `json:"error,omitempty"`
	// Rules are the value of each rule of the decision's package for this
	// input (Undefined: the rules with none), evaluated when the record is
	// asked for, with the bundle in force then (ExplainedRevision).
	Rules             map[string]any `json:"rules,omitempty"`
	Undefined         []string       `json:"undefined,omitempty"`
	ExplainedRevision string         `json:"explained_revision,omitempty"`

	// Input is the input as evaluated (not serialized: the decision log
	// has it, masked).
	Input ast.Value `json:"-"`
}

// RateLimitStep is one quota the rate-limit service found over its limit.
type RateLimitStep struct {
	Quota      string            `json:"quota"`
	Descriptor map[string]string `json:"descriptor"`
	Limit      uint64            `json:"limit"`
	Window     string            `json:"window"` // second, minute, hour, day
	// Count is the requests the window had counted when this one was
	// refused (refused requests count nothing).
	Count uint64    `json:"count"`
	Time  time.Time `json:"time"`
}

// EdgeStep is Envoy's answer.
type EdgeStep struct {
	Status        int    `json:"status"`
	ResponseFlags string `json:"response_flags,omitempty"`
	// Details is Envoy's response code details (e.g.
	// rbac_access_denied_matched_policy[none], route_not_found).
	Details string `json:"details,omitempty"`
	// Check is the edge check that answered: ip_allowlist, unknown_host,
	// inactive_tenant, cors, local_rate_limit, rate_limit, authz,
	// authz_unavailable, rate_limit_unavailable, upstream.
	Check   string `json:"check,omitempty"`
	Meaning string `json:"meaning,omitempty"`
}

// Store is a bounded set of records. It is safe for concurrent use.
type Store struct {
	mu    sync.Mutex
	ring  []*Record // oldest at next once full
	next  int
	full  bool
	byDec map[string]*Record
	byReq map[string]*Record

	shared *Shared // sessions.redis: every replica's records; nil: this one's
}

// NewStore keeps up to n records; n <= 0 is a store that keeps none.
func NewStore(n int) *Store {
	if n <= 0 {
		return nil
	}
	return &Store{ring: make([]*Record, n), byDec: map[string]*Record{}, byReq: map[string]*Record{}}
}

// Enabled reports whether records are kept.
func (s *Store) Enabled() bool { return s != nil }

// Update merges into the record with this decision or request id (one is
// enough), or a new one, under the store's lock: f must not block.
func (s *Store) Update(decisionID, requestID string, f func(*Record)) {
	if s == nil || (decisionID == "" && requestID == "") {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.byDec[decisionID]
	if r == nil {
		r = s.byReq[requestID]
	}
	if r == nil {
		r = &Record{}
		if old := s.ring[s.next]; old != nil {
			s.forget(old)
		}
		s.ring[s.next] = r
		s.next = (s.next + 1) % len(s.ring)
		s.full = s.full || s.next == 0
	}
	f(r)
	if decisionID != "" && r.DecisionID == "" {
		r.DecisionID = decisionID
	}
	if requestID != "" && r.RequestID == "" {
		r.RequestID = requestID
	}
	if r.DecisionID != "" {
		s.byDec[r.DecisionID] = r
	}
	if r.RequestID != "" {
		s.byReq[r.RequestID] = r
	}
}

func (s *Store) forget(r *Record) {
	if s.byDec[r.DecisionID] == r {
		delete(s.byDec, r.DecisionID)
	}
	if s.byReq[r.RequestID] == r {
		delete(s.byReq, r.RequestID)
	}
}

// Get is a copy of the record with this decision id or request id.
func (s *Store) Get(id string) (Record, bool) {
	if s == nil || id == "" {
		return Record{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.byDec[id]
	if r == nil {
		r = s.byReq[id]
	}
	if r == nil {
		return Record{}, false
	}
	c := *r
	if r.Identity != nil {
		id := *r.Identity
		c.Identity = &id
	}
	if r.Policy != nil {
		p := *r.Policy
		c.Policy = &p
	}
	if r.Edge != nil {
		e := *r.Edge
		c.Edge = &e
	}
	c.RateLimit = append([]RateLimitStep(nil), r.RateLimit...)
	return c, true
}

// Len is the number of records kept.
func (s *Store) Len() int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.full {
		return len(s.ring)
	}
	return s.next
}

// ClaimedIssuer is the iss claim of a compact JWT, read without verifying
// it (for a refused token: which issuer it says it is from); "" when it
// cannot be read. The token itself is never kept.
func ClaimedIssuer(token string) string {
	if len(token) > 16<<10 {
		return ""
	}
	tok, err := jwt.ParseInsecure([]byte(token))
	if err != nil {
		return ""
	}
	iss := tok.Issuer()
	if len(iss) > 256 {
		iss = iss[:256]
	}
	return iss
}
