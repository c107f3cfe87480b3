package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/kailash-gw/kailash/workflow/store"
)

// Workflow versions on the API. A tenant's workflow has a version, 1 at
// creation and one more at every PUT; GET answers the current version
// (?version=N an older one) with ETag "N"; PUT with If-Match: "N" replaces
// the definition only while N is current (412 otherwise). Each execution
// records the version it ran (workflow_version). Shared workflows
// (runner.workflows) have no versions and cannot be replaced.

// etag is the entity tag of a workflow version.
func etag(version int) string { return `"` + strconv.Itoa(version) + `"` }

// setETag sets the version's ETag with Cache-Control: no-transform: Envoy's
// compressor (on by default on tenant listeners) drops a strong ETag from
// a response it gzips, and a client would lose the tag If-Match needs; it
// compresses no response that says no-transform (RFC 9111 §5.2.2.6).
func setETag(w http.ResponseWriter, version int) {
	w.Header().Set("ETag", etag(version))
	w.Header().Set("Cache-Control", "no-transform")
}

// ifMatch reads If-Match: nil when absent (unconditional), "*" as any
// version (0); otherwise the versions listed. A tag that is not a
// version's (weak, not a number) matches none.
func ifMatch(r *http.Request) (versions []int, present bool) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" {
		return nil, false
	}
	for _, tag := range strings.Split(h, ",") {
		tag = strings.TrimSpace(tag)
		if tag == "*" {
			return []int{0}, true
		}
		if n, err := strconv.Atoi(strings.Trim(tag, `"`)); err == nil && n > 0 && strings.HasPrefix(tag, `"`) && strings.HasSuffix(tag, `"`) {
			versions = append(versions, n)
		}
	}
	if versions == nil {
		versions = []int{-1} // matches no version
	}
	return versions, true
}

func (s *Server) getWorkflow(w http.ResponseWriter, r *http.Request) {
	c, ok := s.caller(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	wf, sw, err := s.lookup(r.Context(), c.Tenant, name)
	if err != nil {
		s.notFoundOr(w, r, err, "workflow")
		return
	}
	if v := r.URL.Query().Get("version"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			writeError(w, http.StatusBadRequest, "bad_version", "version must be a positive integer")
			return
		}
		if sw == nil {
			writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("workflow %q is shared (runner.workflows): it has no versions", name))
			return
		}
		if n != sw.Version {
			if sw, err = s.store.GetWorkflowVersion(r.Context(), c.Tenant, name, n); err != nil {
				s.notFoundOr(w, r, err, "workflow version")
				return
			}
			if wf, err = s.compiled.compile(sw); err != nil {
				s.internal(w, r, err)
				return
			}
		}
	}
	if sw == nil {
		writeJSON(w, http.StatusOK, map[string]any{"definition": wf.Def, "shared": true})
		return
	}
	setETag(w, sw.Version)
	writeJSON(w, http.StatusOK, map[string]any{"definition": wf.Def, "shared": false, "version": sw.Version,
		"created_by": sw.CreatedBy, "created_at": sw.CreatedAt, "updated_by": sw.UpdatedBy, "updated_at": sw.UpdatedAt})
}

// updateWorkflow replaces a tenant workflow's definition with a new
// version: validated exactly as a create; the path names it and the body's
// name must agree. A refused definition changes nothing (the current
// version keeps serving).
func (s *Server) updateWorkflow(w http.ResponseWriter, r *http.Request) {
	c, ok := s.caller(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	d, def, ok := s.readDefinition(w, r, c)
	if !ok {
		return
	}
	if d.Name != name {
		writeError(w, http.StatusBadRequest, "bad_definition", fmt.Sprintf("name: %q does not match the workflow %q the path names (a workflow cannot be renamed)", d.Name, name))
		return
	}
	want := 0
	if tags, present := ifMatch(r); present {
		want = tags[0]
		if len(tags) > 1 {
			// Several tags: the current version must be one of them.
			cur, err := s.store.GetWorkflow(r.Context(), c.Tenant, name)
			if err != nil {
				s.notFoundOr(w, r, err, "workflow")
				return
			}
			want = -1
			for _, t := range tags {
				if t == cur.Version {
					want = t
				}
			}
		}
	}
	if want < 0 {
		cur, err := s.store.GetWorkflow(r.Context(), c.Tenant, name)
		if err != nil {
			s.notFoundOr(w, r, err, "workflow")
			return
		}
		s.preconditionFailed(w, name, cur.Version)
		return
	}
	v, err := s.store.UpdateWorkflow(r.Context(), c.Tenant, c.User, name, def, want)
	if err == nil {
		s.workflowChanged(r.Context(), c.Tenant, name)
	}
	var vc *store.VersionConflictError
	switch {
	case errors.As(err, &vc):
		s.preconditionFailed(w, name, vc.Current)
		return
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no such workflow %q (create it with POST /v1/workflows)", name))
		return
	case err != nil:
		s.internal(w, r, err)
		return
	}
	s.requestLog(r).Info("workflow updated", "tenant", c.Tenant, "workflow", name, "version", v, "by", c.User)
	setETag(w, v)
	writeJSON(w, http.StatusOK, map[string]any{"name": name, "version": v, "nodes": len(d.Nodes)})
}

func (s *Server) preconditionFailed(w http.ResponseWriter, name string, current int) {
	setETag(w, current)
	writeJSON(w, http.StatusPreconditionFailed, map[string]any{"error": "version_mismatch",
		"message": fmt.Sprintf("workflow %q is at version %d, not the one If-Match names: read it again and retry", name, current), "version": current})
}
