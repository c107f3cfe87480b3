package api

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/kailash-gw/kailash/workflow"
	"github.com/kailash-gw/kailash/workflow/store"
)

// Executions read their tenant's workflow definition from a short-lived
// cache instead of the store (on PostgreSQL a round trip per execution).
// A change made through this runner's API drops the entry at once; one made
// through another runner on the same PostgreSQL is announced on
// workflowsChannel right after its commit and drops the entry there within
// milliseconds; defTTL bounds what a lost notification can leave (at most
// that long an execution on another runner may run the previous version,
// and records the version it ran). Reads of the definition itself (GET,
// PUT's If-Match) always go to the store.

const (
	workflowsChannel = "kailash_runner_workflows"
	defCacheMax      = 10_000 // entries; the cache is emptied when full
)

// defTTL is how long a cached definition is used (a variable for tests).
var defTTL = time.Second

type defKey struct{ tenant, name string }

type defEntry struct {
	sw *store.StoredWorkflow // nil: not a tenant workflow (shared, or none)
	at time.Time
}

type defCache struct {
	mu  sync.Mutex
	m   map[defKey]defEntry
	gen uint64 // bumped by every drop: a read that raced a change is not kept
}

// get is k's fresh entry, or the generation a read of the store must
// present to put.
func (c *defCache) get(k defKey, now time.Time) (*store.StoredWorkflow, bool, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || now.Sub(e.at) >= defTTL {
		return nil, false, c.gen
	}
	return e.sw, true, c.gen
}

func (c *defCache) put(k defKey, sw *store.StoredWorkflow, at time.Time, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return // a change was announced while the store was read
	}
	if c.m == nil || len(c.m) >= defCacheMax {
		c.m = map[defKey]defEntry{}
	}
	c.m[k] = defEntry{sw, at}
}

func (c *defCache) drop(k defKey) {
	c.mu.Lock()
	delete(c.m, k)
	c.gen++
	c.mu.Unlock()
}

// lookupForRun is lookup through the definition cache.
func (s *Server) lookupForRun(ctx context.Context, tenant, name string) (*workflow.Workflow, *store.StoredWorkflow, error) {
	k := defKey{tenant, name}
	now := time.Now()
	sw, ok, gen := s.defs.get(k, now)
	if !ok {
		var err error
		sw, err = s.store.GetWorkflow(ctx, tenant, name)
		switch {
		case errors.Is(err, store.ErrNotFound):
			sw = nil
		case err != nil:
			return nil, nil, err
		}
		s.defs.put(k, sw, now, gen)
	}
	if sw != nil {
		w, err := s.compiled.compile(sw)
		return w, sw, err
	}
	if w := (*s.workflows.Load())[name]; w != nil {
		return w, nil, nil
	}
	return nil, nil, store.ErrNotFound
}

// workflowChanged drops the cached definition after a change through this
// runner, and tells the other runners.
func (s *Server) workflowChanged(ctx context.Context, tenant, name string) {
	s.defs.drop(defKey{tenant, name})
	if s.peers != nil {
		if err := s.peers.Notify(context.WithoutCancel(ctx), workflowsChannel, tenant+"\n"+name); err != nil {
			s.log.Warn("runner: telling the other runners of a workflow change failed; they see it within a second", "tenant", tenant, "workflow", name, "err", err)
		}
	}
}

// remoteWorkflowChange is a change announced by a runner (this one too).
func (s *Server) remoteWorkflowChange(payload string) {
	if tenant, name, ok := strings.Cut(payload, "\n"); ok {
		s.defs.drop(defKey{tenant, name})
	}
}
