package api

import (
	"context"
	"fmt"

	"github.com/kailash-gw/kailash/workflow"
	"github.com/kailash-gw/kailash/workflow/store"
)

// The runner as the store's Resumer: an execution taken over from a dead
// runner resumes here from its last completed node when the definition it
// ran (its workflow version) is known, the caller's limits still admit it,
// and every node left to run is safe to run again (workflow.ResumeBlocker,
// docs/deploy.md); otherwise the store marks it interrupted with the reason.

var _ store.Resumer = (*Server)(nil)

// Resumable says why e cannot resume here ("" when it can).
func (s *Server) Resumable(ctx context.Context, e *store.ExecutionRecord) string {
	_, _, why := s.resumePlan(ctx, e)
	return why
}

// resumePlan is the compiled definition e ran and the outputs of its
// completed nodes, or why it cannot resume.
func (s *Server) resumePlan(ctx context.Context, e *store.ExecutionRecord) (*workflow.Workflow, map[string]map[string]any, string) {
	if e.WorkflowVersion == 0 {
		return nil, nil, fmt.Sprintf("the version of workflow %q it ran is not recorded (a shared workflow from runner.workflows, or an execution from before versions)", e.Workflow)
	}
	sw, err := s.store.GetWorkflowVersion(ctx, e.Tenant, e.Workflow, e.WorkflowVersion)
	if err != nil {
		return nil, nil, fmt.Sprintf("version %d of workflow %q cannot be read: %v", e.WorkflowVersion, e.Workflow, err)
	}
	wf, err := s.compiled.compile(sw)
	if err != nil {
		return nil, nil, fmt.Sprintf("version %d of workflow %q does not compile: %v", e.WorkflowVersion, e.Workflow, err)
	}
	c := workflow.Caller{Tenant: e.Tenant, User: e.User, Roles: e.Roles}
	if err := s.exec.AdmitCaller(wf, c); err != nil {
		return nil, nil, "the caller's limits no longer admit it: " + err.Error()
	}
	done := map[string]map[string]any{}
	completed := map[string]bool{}
	for _, n := range e.Nodes {
		switch {
		case n.Status != "completed":
			return nil, nil, fmt.Sprintf("node %q (%s) had failed", n.Node, n.Type)
		case !wf.HasNode(n.Node, n.Type):
			return nil, nil, fmt.Sprintf("node %q (%s) is not in version %d", n.Node, n.Type, e.WorkflowVersion)
		}
		done[n.Node], completed[n.Node] = n.Output, true
	}
	if why := wf.ResumeBlocker(completed); why != "" {
		return nil, nil, why
	}
	return wf, done, ""
}

// Resume runs e, which this runner now owns, from its completed nodes, in
// the background like an asynchronous execution (cancellable; its
// max_execution_time counts from now).
func (s *Server) Resume(e *store.ExecutionRecord) {
	lg := s.log.With("tenant", e.Tenant, "workflow", e.Workflow, "execution", e.ID)
	s.resumeMu.Lock()
	if s.closing {
		s.resumeMu.Unlock()
		lg.Warn("runner: not resuming a taken-over execution: this runner is shutting down; its lease will expire for another runner")
		return
	}
	s.inflight.Add(1)
	s.resumeMu.Unlock()
	ctx, cancel := context.WithCancelCause(s.base)
	s.running.Store(e.ID, &runningExec{tenant: e.Tenant, workflow: e.Workflow, user: e.User, cancel: cancel})
	go func() {
		defer s.inflight.Done()
		defer s.running.Delete(e.ID)
		defer cancel(nil)
		wf, done, why := s.resumePlan(ctx, e)
		if why != "" { // changed since the takeover decided
			msg := "taken over from a dead runner but not resumable: " + why
			if err := s.store.FinishExecution(context.WithoutCancel(ctx), e.Tenant, e.ID, store.StatusInterrupted, nil, msg); err != nil {
				lg.Error("recording an execution's end", "err", err)
			}
			return
		}
		lg.Info("runner: resuming an execution taken over from a dead runner", "completed_nodes", len(done))
		s.run(ctx, lg, "", s.exec.ReserveResumed(wf, workflow.Caller{Tenant: e.Tenant, User: e.User, Roles: e.Roles}), wf, e, 0, false, done)
	}()
}
