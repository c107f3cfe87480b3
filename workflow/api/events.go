package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/kailash-gw/kailash/internal/wire"
	"github.com/kailash-gw/kailash/workflow"
)

// Event is one step in an execution's life, as the event stream shows it.
type Event struct {
	Type      string    `json:"type"` // execution.started | node.finished | node.failed | execution.completed | execution.failed
	Tenant    string    `json:"tenant"`
	Workflow  string    `json:"workflow"`
	Execution string    `json:"execution_id"`
	Node      string    `json:"node,omitempty"`
	Status    string    `json:"status,omitempty"`
	Error     string    `json:"error,omitempty"`
	At        time.Time `json:"at"`
	// Policy is the workflow's event metadata; subscribers are filtered by it.
	Policy workflow.EventPolicy `json:"-"`
}

// classification levels, as the seed's EnterpriseEventFilter.
var clearance = map[string]int{"public": 1, "internal": 2, "confidential": 3, "secret": 4}

// subscriber receives the events of one tenant (and optionally one
// workflow) that pass its filter.
type subscriber struct {
	tenant, workflow string
	roles            []string
	ch               chan Event
	dropped          int // guarded by broker.mu
	// clearance is the subscriber's clearance attribute (from the identity
	// token: the directory's or IdP's value), "" when unknown.
	clearance string

	// id is the verified identity the policy decisions are asked about;
	// access caches them by workflow (used by the serving goroutine only).
	id     identity
	access map[string]accessEntry
}

// accessEntry is one cached event decision: for the policy revision it was
// made under, until expires.
type accessEntry struct {
	revision string
	allowed  bool
	expires  time.Time
}

// DefaultEventDecision is the decision the event streams evaluate unless
// runner.event_decision names another: the shipped bundle's department and
// clearance rules for the workflow an event is of.
const DefaultEventDecision = "kailash/authz/resource_allowed"

const (
	// eventAccessTTL bounds a cached decision of an evaluator that reports
	// no revision (one that does is re-asked when its revision changes).
	eventAccessTTL = 30 * time.Second
	// eventAccessRetry is how soon a failed decision is asked again; until
	// then the workflow's events are withheld.
	eventAccessRetry = 5 * time.Second
	// maxAccessEntries bounds one subscriber's cache.
	maxAccessEntries = 4096
)

// revisioner is an evaluator that can say which policy version answers.
type revisioner interface{ Revision() string }

// eventAllowed asks the runner's event decision whether sub may see e's
// workflow, with the input ext_authz builds for GET
// /v1/workflows/{workflow}/events by this identity: so a tenant-wide stream
// shows a labelled workflow's events only to whom the workflow's own routes
// admit (department, clearance). The decision is cached per subscriber,
// workflow and policy revision. An error or an answer that is not a
// boolean (or {"allowed": bool}) withholds the events (fail closed).
func (s *Server) eventAllowed(ctx context.Context, sub *subscriber, e Event) bool {
	rev, hasRev := "", false
	if r, ok := s.eventPol.(revisioner); ok {
		rev, hasRev = r.Revision(), true
	}
	now := time.Now()
	if ent, ok := sub.access[e.Workflow]; ok && ent.revision == rev && now.Before(ent.expires) {
		return ent.allowed
	}
	allowed, err := s.decideEvents(ctx, sub, e.Workflow)
	if hasRev {
		rev = s.eventPol.(revisioner).Revision() // the first Eval of a lazy engine loads it
	}
	ent := accessEntry{revision: rev, allowed: allowed, expires: now.Add(eventAccessTTL)}
	if hasRev {
		ent.expires = now.Add(24 * time.Hour)
	}
	if err != nil {
		ent.allowed, ent.expires = false, now.Add(eventAccessRetry)
		s.log.Warn("event decision failed; withholding the workflow's events", "tenant", sub.tenant, "user", sub.id.User, "workflow", e.Workflow, "err", err)
	}
	if sub.access == nil || len(sub.access) >= maxAccessEntries {
		sub.access = map[string]accessEntry{}
	}
	sub.access[e.Workflow] = ent
	return ent.allowed
}

func (s *Server) decideEvents(ctx context.Context, sub *subscriber, workflow string) (bool, error) {
	attrs := sub.id.Attributes
	if attrs == nil {
		attrs = map[string]any{}
	}
	v, err := ast.InterfaceToValue(map[string]any{
		"version": map[string]any{wire.PolicyInputKey: wire.PolicyInputVersion},
		"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
			"method": "GET", "path": "/v1/workflows/" + url.PathEscape(workflow) + "/events",
		}}},
		"parsed_path": []any{"v1", "workflows", workflow, "events"},
		"identity": map[string]any{"sub": sub.id.User, "tenant": sub.id.Tenant, "roles": anySlice(sub.id.Roles),
			"groups": anySlice(sub.id.Groups), "attributes": attrs},
		"tenant": map[string]any{"id": sub.tenant},
	})
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	dec, err := s.eventPol.Eval(ctx, v)
	if err != nil {
		return false, fmt.Errorf("policy: %w", err)
	}
	switch d := dec.(type) {
	case bool:
		return d, nil
	case map[string]any:
		if a, ok := d["allowed"].(bool); ok {
			return a, nil
		}
	}
	return false, fmt.Errorf("policy: the event decision is a %T, want a boolean or an object with a boolean \"allowed\"", dec)
}

// visible applies the seed's three rules: same tenant; the required
// permission held (a role named like the permission, or admin); the
// classification within the subscriber's clearance (its clearance attribute
// or its highest "clearance:<level>" role, whichever is higher; public by
// default).
func (s *subscriber) visible(e Event) bool {
	if e.Tenant != s.tenant || (s.workflow != "" && e.Workflow != s.workflow) {
		return false
	}
	if p := e.Policy.RequiredPermission; p != "" && !slices.Contains(s.roles, p) && !slices.Contains(s.roles, "admin") {
		return false
	}
	level := max(1, clearance[s.clearance])
	for _, r := range s.roles {
		if lv, ok := strings.CutPrefix(r, "clearance:"); ok && clearance[lv] > level {
			level = clearance[lv]
		}
	}
	cls := e.Policy.Classification
	if cls == "" {
		cls = "public"
	}
	need, ok := clearance[cls]
	if !ok {
		need = len(clearance) + 1 // an unknown classification is seen by none
	}
	return level >= need
}

// broker fans events out to subscribers; a slow subscriber loses events
// (counted) rather than slowing executions.
type broker struct {
	mu   sync.Mutex // guards subs
	subs map[*subscriber]struct{}
}

func newBroker() *broker { return &broker{subs: map[*subscriber]struct{}{}} }

func (b *broker) publish(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		if !s.visible(e) {
			continue
		}
		select {
		case s.ch <- e:
		default:
			s.dropped++
		}
	}
}

func (b *broker) subscribe(s *subscriber) func() {
	s.ch = make(chan Event, 256)
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		delete(b.subs, s)
		b.mu.Unlock()
	}
}

// serveEvents streams the caller's tenant's events as Server-Sent Events
// until the client goes away or the server stops. Besides the workflow's
// own event policy (visible), each workflow's events pass the runner's
// event decision (eventAllowed): its department/clearance labels.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	id, ok := s.identify(w, r)
	if !ok {
		return
	}
	c := id.Caller
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "no_streaming", "the connection cannot stream")
		return
	}
	sub := &subscriber{tenant: c.Tenant, workflow: r.PathValue("name"), roles: c.Roles, clearance: c.Clearance, id: id}
	unsubscribe := s.events.subscribe(sub)
	defer unsubscribe()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": subscribed\n\n")
	fl.Flush()
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.base.Done():
			return
		case <-keepalive.C:
			fmt.Fprint(w, ": keepalive\n\n")
			fl.Flush()
		case e := <-sub.ch:
			if !s.eventAllowed(r.Context(), sub, e) {
				continue
			}
			b, _ := json.Marshal(e)
			fmt.Fprintf(w, "event: %s\nid: %s\ndata: %s\n\n", e.Type, e.Execution, b)
			fl.Flush()
		}
	}
}

// serveEventsWS streams the same events as serveEvents over a WebSocket:
// one JSON text message per event, with the same tenant, permission,
// clearance and event-decision filtering. The identity is checked before the upgrade, so a
// request without one gets a plain 401. Messages from the client are
// ignored; the stream ends when either side closes or the server stops.
func (s *Server) serveEventsWS(w http.ResponseWriter, r *http.Request) {
	id, ok := s.identify(w, r)
	if !ok {
		return
	}
	c := id.Caller
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered
	}
	defer conn.CloseNow()
	sub := &subscriber{tenant: c.Tenant, workflow: r.PathValue("name"), roles: c.Roles, clearance: c.Clearance, id: id}
	unsubscribe := s.events.subscribe(sub)
	defer unsubscribe()
	ctx := conn.CloseRead(r.Context()) // reads (and answers) control frames
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	write := func(v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return conn.Write(wctx, websocket.MessageText, b)
	}
	if err := write(map[string]any{"type": "subscribed", "tenant": c.Tenant, "workflow": sub.workflow}); err != nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.base.Done():
			_ = conn.Close(websocket.StatusGoingAway, "runner stopping")
			return
		case <-keepalive.C:
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				return
			}
		case e := <-sub.ch:
			if !s.eventAllowed(ctx, sub, e) {
				continue
			}
			if err := write(e); err != nil {
				if !errors.Is(err, context.Canceled) {
					s.log.Debug("event stream write", "err", err)
				}
				return
			}
		}
	}
}

func anySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
