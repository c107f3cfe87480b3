package explain

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Shared keeps records in Redis (sessions.redis) so that any authz replica
// answers for a request another replica checked, and the edge step (Envoy's
// access log reaches one replica, perhaps not the one that checked) joins
// the Check's. Writes are queued and never delay a Check; a full queue
// drops (counted). Records expire after the TTL.
type Shared struct {
	c       *redis.Client
	ttl     time.Duration
	q       chan sharedWrite
	dropped atomic.Uint64
	failed  atomic.Uint64
}

type sharedWrite struct {
	decisionID, requestID, part string
	data                        []byte
}

// Record parts in Redis.
const (
	partCheck = "check"
	partEdge  = "edge"
)

const sharedPrefix = "kailash:explain:"

// NewShared starts the writer; it stops when ctx ends.
func NewShared(ctx context.Context, c *redis.Client, ttl time.Duration) *Shared {
	s := &Shared{c: c, ttl: ttl, q: make(chan sharedWrite, 4096)}
	go s.run(ctx)
	return s
}

// Dropped and Failed count writes lost to a full queue and to Redis errors.
func (s *Shared) Dropped() uint64 { return s.dropped.Load() }
func (s *Shared) Failed() uint64  { return s.failed.Load() }

func (s *Shared) put(decisionID, requestID, part string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	select {
	case s.q <- sharedWrite{decisionID, requestID, part, b}:
	default:
		s.dropped.Add(1)
	}
}

func mainKey(decisionID, requestID string) string {
	if requestID != "" {
		return sharedPrefix + "r:" + requestID
	}
	return sharedPrefix + "d:" + decisionID
}

func (s *Shared) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case w := <-s.q:
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			key := mainKey(w.decisionID, w.requestID)
			_, err := s.c.TxPipelined(wctx, func(p redis.Pipeliner) error {
				p.HSet(wctx, key, w.part, w.data)
				p.Expire(wctx, key, s.ttl)
				if w.decisionID != "" && w.requestID != "" {
					p.Set(wctx, sharedPrefix+"a:"+w.decisionID, key, s.ttl) // the decision id finds the request's record
				}
				return nil
			})
			cancel()
			if err != nil {
				s.failed.Add(1)
			}
		}
	}
}

// get is the parts stored under id (a request id or a decision id).
func (s *Shared) get(ctx context.Context, id string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	m, err := s.c.HGetAll(ctx, sharedPrefix+"r:"+id).Result()
	if err != nil || len(m) > 0 {
		return m, err
	}
	// A decision id: an alias of its request's record, or a record of its
	// own (no request id: the Check did not come through Envoy).
	key, err := s.c.Get(ctx, sharedPrefix+"a:"+id).Result()
	switch {
	case errors.Is(err, redis.Nil):
		key = sharedPrefix + "d:" + id
	case err != nil:
		return nil, err
	}
	return s.c.HGetAll(ctx, key).Result()
}

// edgePart is what Envoy's access log adds to a record.
type edgePart struct {
	Time     time.Time `json:"time"`
	Tenant   string    `json:"tenant,omitempty"`
	Method   string    `json:"method,omitempty"`
	Host     string    `json:"host,omitempty"`
	Path     string    `json:"path,omitempty"`
	ClientIP string    `json:"client_ip,omitempty"`
	Outcome  string    `json:"outcome,omitempty"`
	Status   int       `json:"status"`
	Edge     *EdgeStep `json:"edge"`
}

// checkPart is the Check's record with the policy input (credentials
// removed) for the rules' evaluation.
type checkPart struct {
	Record
	Input json.RawMessage `json:"policy_input,omitempty"`
}

// merge builds a record from its parts; input is the policy input kept
// with the Check part (nil: none).
func merge(parts map[string]string) (Record, json.RawMessage, bool) {
	var r Record
	var input json.RawMessage
	found := false
	if c, ok := parts[partCheck]; ok {
		var cp checkPart
		if json.Unmarshal([]byte(c), &cp) == nil {
			r, input, found = cp.Record, cp.Input, true
		}
	}
	if e, ok := parts[partEdge]; ok {
		var ep edgePart
		if json.Unmarshal([]byte(e), &ep) == nil {
			applyEdge(&r, ep)
			found = true
		}
	}
	return r, input, found
}

func applyEdge(r *Record, ep edgePart) {
	if r.Time.IsZero() {
		r.Time = ep.Time
	}
	if r.Tenant == "" {
		r.Tenant = ep.Tenant
	}
	if r.Method == "" {
		r.Method, r.Host, r.Path, r.ClientIP = ep.Method, ep.Host, ep.Path, ep.ClientIP
	}
	if r.Outcome == "" {
		r.Outcome = ep.Outcome
	}
	r.Status, r.Edge = ep.Status, ep.Edge
}

// SetShared makes the store write to and read from sh as well.
func (s *Store) SetShared(sh *Shared) {
	if s != nil {
		s.shared = sh
	}
}

// Shared is the shared store in use (nil: none).
func (s *Store) Shared() *Shared {
	if s == nil {
		return nil
	}
	return s.shared
}

// ShareCheck writes the Check's part of the record of id to the shared
// store, with the policy input (credentials already removed by the caller).
func (s *Store) ShareCheck(id string, input json.RawMessage) {
	if s == nil || s.shared == nil {
		return
	}
	r, ok := s.Get(id)
	if !ok {
		return
	}
	r.Edge, r.Status = nil, 0
	s.shared.put(r.DecisionID, r.RequestID, partCheck, checkPart{Record: r, Input: input})
}

// ShareEdge writes the edge part of the record of id to the shared store.
func (s *Store) ShareEdge(id string) {
	if s == nil || s.shared == nil {
		return
	}
	r, ok := s.Get(id)
	if !ok || r.Edge == nil {
		return
	}
	s.shared.put(r.DecisionID, r.RequestID, partEdge, edgePart{Time: r.Time, Tenant: r.Tenant, Method: r.Method, Host: r.Host,
		Path: r.Path, ClientIP: r.ClientIP, Outcome: r.Outcome, Status: r.Status, Edge: r.Edge})
}

// Lookup is the record of id from this replica's memory and the shared
// store together; input is the policy input the shared store kept, when
// the Check ran on another replica.
func (s *Store) Lookup(ctx context.Context, id string) (r Record, input json.RawMessage, ok bool, err error) {
	r, ok = s.Get(id)
	if s == nil || s.shared == nil {
		return r, nil, ok, nil
	}
	parts, err := s.shared.get(ctx, id)
	if err != nil {
		return r, nil, ok, err
	}
	shared, in, found := merge(parts)
	switch {
	case !found:
		return r, nil, ok, nil
	case !ok:
		return shared, in, true, nil
	}
	// This replica's own Check part (its input is at hand) and whatever
	// the other replicas added.
	if r.Identity == nil && r.Policy == nil && (shared.Identity != nil || shared.Policy != nil) {
		edge, status := r.Edge, r.Status
		r = shared
		if edge != nil {
			r.Edge, r.Status = edge, status
		}
		return r, in, true, nil
	}
	if r.Edge == nil && shared.Edge != nil {
		r.Edge, r.Status = shared.Edge, shared.Status
		if r.Outcome == "" {
			r.Outcome = shared.Outcome
		}
	}
	return r, nil, true, nil
}
