package workflow

import (
	"fmt"
	"net/http"
	"slices"
)

// Resuming an execution after its runner died (docs/deploy.md). The runner
// that takes it over has the results of the nodes that completed (stored as
// each ended, sealed with the rest); it runs the others again from there. A
// node that was running at the death may have done part or all of its work
// before, so it runs again only when running it twice is harmless:
//
//   - identity, transform, lineage: pure functions of their input;
//   - code: Starlark in the sandbox, which has no I/O;
//   - http with GET, HEAD, PUT or DELETE: idempotent methods (RFC 9110
//     §9.2.2); POST and PATCH are not;
//   - sql with read_only (the default); a writing statement is not;
//   - batch when its step is.
//
// Never: audit_log (a second record of the action), permission_check (a
// resumed execution has no live identity to decide for: only the user and
// roles recorded at its start) and anything else not listed. A workflow
// with resume: never is never resumed.

// Resume modes of Definition.Resume.
const (
	ResumeAuto  = "auto"
	ResumeNever = "never"
)

// idempotentMethods are the http node's methods it may send again.
var idempotentMethods = []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete}

// ResumeBlocker says why an execution of w whose nodes in completed ended
// cannot resume: "" when it can (every other node is safe to run again and
// the workflow does not opt out).
func (w *Workflow) ResumeBlocker(completed map[string]bool) string {
	if w.Def.Resume == ResumeNever {
		return fmt.Sprintf("workflow %q opts out of resuming (resume: never)", w.Def.Name)
	}
	for _, i := range w.order {
		n := w.nodes[i]
		if completed[n.id] {
			continue
		}
		if why := rerunBlocker(n); why != "" {
			return fmt.Sprintf("node %q (%s) had not completed and is not safe to run again: %s", n.id, n.typ, why)
		}
	}
	return ""
}

// rerunBlocker is why node n may not run a second time, "" when it may.
func rerunBlocker(n *cnode) string {
	switch n.typ {
	case "identity", "transform", "lineage", "code":
		return ""
	case "http":
		if p, ok := n.prep.(*httpPrep); ok && !slices.Contains(idempotentMethods, p.method) {
			return "method " + p.method + " is not idempotent"
		}
		return ""
	case "sql":
		if p, ok := n.prep.(*sqlPrep); ok && !p.readOnly {
			return "a writing statement (read_only: false)"
		}
		return ""
	case "batch":
		if p, ok := n.prep.(*batchPrep); ok {
			if why := rerunBlocker(p.step); why != "" {
				return "its step: " + why
			}
		}
		return ""
	case "audit_log":
		return "it would record the action again"
	case "permission_check":
		return "a resumed execution has no live identity to decide for"
	}
	return "not known to be safe"
}

// HasNode reports whether w has a node id of type typ (a stored node
// result belongs to this definition).
func (w *Workflow) HasNode(id, typ string) bool {
	i, ok := w.index[id]
	return ok && w.nodes[i].typ == typ
}
