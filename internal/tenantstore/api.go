package tenantstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/kailash-gw/kailash/internal/jsonapi"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kailash-gw/kailash/internal/audit"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/wire"
)

// Caller is who called the admin API, from the identity token ext_authz
// signed for the request after the policy allowed it.
type Caller struct {
	Tenant, Subject string
}

// Actor is the caller as audit events name it.
func (c Caller) Actor() string { return c.Subject + "@" + c.Tenant }

// API is the tenant admin API (wire.AdminTenantsPath). It is served on
// authz's HTTP port and reached through Envoy on the admin tenant's
// domains with ext_authz on: the policy decides every call (the shipped
// bundle: permission system:configure). Here a call must also carry the
// identity token ext_authz signs on allow, for the admin tenant — the
// proof that it came that way — which names the actor of the audit event.
type API struct {
	Store  *Store
	Source *Source
	Audit  *audit.Logger
	Log    *slog.Logger
	// Authenticate verifies the request's identity token.
	Authenticate func(*http.Request) (Caller, error)
	// AdminTenant is tenant_store.admin_tenant.
	AdminTenant string
	Now         func() time.Time
}

// Routes registers the API on mux.
func (a *API) Routes(mux *http.ServeMux) {
	p := wire.AdminTenantsPath
	mux.HandleFunc("GET "+p, a.wrap(a.list))
	mux.HandleFunc("POST "+p, a.wrap(a.create))
	mux.HandleFunc("GET "+p+"/{id}", a.wrap(a.get))
	mux.HandleFunc("PUT "+p+"/{id}", a.wrap(a.update))
	mux.HandleFunc("DELETE "+p+"/{id}", a.wrap(a.remove))
	mux.HandleFunc("POST "+p+"/{id}/suspend", a.wrap(a.suspend(true)))
	mux.HandleFunc("POST "+p+"/{id}/resume", a.wrap(a.suspend(false)))
}

type owner struct {
	Tenant string `json:"tenant"`
	Source string `json:"source"`
}

type handler func(ctx context.Context, c Caller, w http.ResponseWriter, r *http.Request) error

func (a *API) wrap(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := a.Authenticate(r)
		if err != nil {
			jsonapi.WriteError(w, jsonapi.Fail(http.StatusUnauthorized, "unauthenticated", "the admin API is reached through Envoy, which the policy authorizes: %v", err))
			return
		}
		if c.Tenant != a.AdminTenant {
			jsonapi.WriteError(w, jsonapi.Fail(http.StatusForbidden, "forbidden", "identity of tenant %q; the admin tenant is %q", c.Tenant, a.AdminTenant))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, config.MaxTenantDocBytes+1)
		if err := h(r.Context(), c, w, r); err != nil {
			var ae *jsonapi.Error
			if !errors.As(err, &ae) {
				a.Log.Error("tenant admin API failed", "method", r.Method, "path", r.URL.Path, "err", err)
				ae = jsonapi.Fail(http.StatusServiceUnavailable, "store_unavailable", "the tenant store failed; try again")
			}
			jsonapi.WriteError(w, ae)
		}
	}
}

func writeDoc(w http.ResponseWriter, status int, d Doc) {
	w.Header().Set("ETag", etag(d.Version))
	jsonapi.Write(w, status, d)
}

func etag(v int64) string { return `"` + strconv.FormatInt(v, 10) + `"` }

// ifMatch is the version If-Match names (0 when absent or "*").
func ifMatch(r *http.Request, required bool) (int64, error) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" || h == "*" {
		if required {
			return 0, jsonapi.Fail(http.StatusPreconditionRequired, "precondition_required", "If-Match: the tenant's ETag (its version) is required, so a concurrent change is not overwritten")
		}
		return 0, nil
	}
	v, err := strconv.ParseInt(strings.Trim(strings.TrimPrefix(h, "W/"), `"`), 10, 64)
	if err != nil || v <= 0 {
		return 0, jsonapi.Fail(http.StatusBadRequest, "bad_request", "If-Match: want the ETag of a tenant (\"<version>\")")
	}
	return v, nil
}

func (a *API) now() time.Time {
	if a.Now != nil {
		return a.Now().UTC()
	}
	return time.Now().UTC()
}

func (a *API) list(ctx context.Context, _ Caller, w http.ResponseWriter, _ *http.Request) error {
	docs, err := a.Store.List(ctx)
	if err != nil {
		return err
	}
	if docs == nil {
		docs = []Doc{}
	}
	jsonapi.Write(w, http.StatusOK, map[string]any{"tenants": docs})
	return nil
}

func (a *API) get(ctx context.Context, _ Caller, w http.ResponseWriter, r *http.Request) error {
	d, err := a.Store.Get(ctx, r.PathValue("id"))
	if err != nil {
		return a.storeError(err, r.PathValue("id"))
	}
	writeDoc(w, http.StatusOK, d)
	return nil
}

func (a *API) create(ctx context.Context, c Caller, w http.ResponseWriter, r *http.Request) error {
	doc, t, err := a.readTenant(r, "")
	if err == nil {
		err = a.check(t, false)
	}
	var d Doc
	if err == nil {
		d, err = a.Store.Create(ctx, doc, t, c.Actor(), a.now())
	}
	a.record(ctx, c, audit.TenantAdd, t.ID, d, err)
	if err != nil {
		return a.storeError(err, t.ID)
	}
	w.Header().Set("Location", wire.AdminTenantsPath+"/"+t.ID)
	writeDoc(w, http.StatusCreated, d)
	return nil
}

func (a *API) update(ctx context.Context, c Caller, w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	v, err := ifMatch(r, true)
	var doc json.RawMessage
	var t config.Tenant
	if err == nil {
		doc, t, err = a.readTenant(r, id)
	}
	if err == nil {
		err = a.check(t, true)
	}
	var d Doc
	if err == nil {
		d, err = a.Store.Update(ctx, doc, t, v, c.Actor(), a.now())
	}
	a.record(ctx, c, audit.TenantChange, id, d, err)
	if err != nil {
		return a.storeError(err, id)
	}
	writeDoc(w, http.StatusOK, d)
	return nil
}

func (a *API) suspend(on bool) handler {
	action := audit.TenantSuspend
	if !on {
		action = audit.TenantResume
	}
	return func(ctx context.Context, c Caller, w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		v, err := ifMatch(r, false)
		var d Doc
		if err == nil {
			d, err = a.Store.SetSuspended(ctx, id, on, v, c.Actor(), a.now())
		}
		a.record(ctx, c, action, id, d, err)
		if err != nil {
			return a.storeError(err, id)
		}
		writeDoc(w, http.StatusOK, d)
		return nil
	}
}

func (a *API) remove(ctx context.Context, c Caller, w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	v, err := ifMatch(r, false)
	var d Doc
	if err == nil {
		d, err = a.Store.Delete(ctx, id, v)
	}
	a.record(ctx, c, audit.TenantRemove, id, d, err)
	if err != nil {
		return a.storeError(err, id)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// readTenant reads the body (JSON, or YAML with an application/yaml
// content type) as one tenant of kailash.yaml, strictly; with pathID the
// document's id must be it. The document is returned as JSON.
func (a *API) readTenant(r *http.Request, pathID string) (json.RawMessage, config.Tenant, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, config.Tenant{}, jsonapi.Fail(http.StatusRequestEntityTooLarge, "too_large", "the document is larger than %d bytes", config.MaxTenantDocBytes)
	}
	t, err := config.ParseTenant("request body", b)
	if err != nil {
		return nil, t, invalid(err, "")
	}
	switch {
	case t.ID == "":
		return nil, t, invalid(errors.New("id: required"), "")
	case !config.ValidTenantID(t.ID):
		return nil, t, invalid(fmt.Errorf("tenant %q: id: must be lowercase letters, digits and '-' (at most 63)", t.ID), "")
	case pathID != "" && t.ID != pathID:
		return nil, t, invalid(fmt.Errorf("id: %q is not the tenant of the path (%q); a tenant cannot be renamed", t.ID, pathID), "")
	}
	var v any
	if err := yaml.Unmarshal(b, &v); err != nil {
		return nil, t, invalid(err, "")
	}
	doc, err := json.Marshal(v)
	if err != nil {
		return nil, t, invalid(fmt.Errorf("the document has no JSON form: %w", err), "")
	}
	return doc, t, nil
}

// check refuses a tenant whose id or domains the file claims, or another
// stored tenant claims (409, naming the owner), and validates the tenant
// in the config it would join (400, the config's own messages).
func (a *API) check(t config.Tenant, replacing bool) error {
	file := a.Source.File()
	docs := a.Source.Docs()
	if o, ok := file.Tenant(t.ID); ok {
		return conflict(&ConflictError{What: "id", Value: t.ID, Owner: o.ID, Source: "file " + file.File})
	}
	if !replacing {
		for _, d := range docs {
			if d.ID == t.ID {
				return conflict(&ConflictError{What: "id", Value: t.ID, Owner: t.ID, Source: SourceName})
			}
		}
	}
	if owns, ok := a.Source.claims(); ok {
		// The combination in force is the newest: its index answers for
		// the domains, and the tenant is validated with the file's alone
		// (as the one-tenant patch does: the only checks between tenants
		// are ids, domains and issuers, and issuers only set defaults).
		for _, d := range t.Domains {
			if id, taken := owns(d); taken && id != t.ID {
				o := owner{Tenant: id, Source: SourceName}
				if _, inFile := file.Tenant(id); inFile {
					o.Source = "file " + file.File
				}
				return conflict(&ConflictError{What: "domain", Value: d, Owner: o.Tenant, Source: o.Source})
			}
		}
		if _, err := file.WithTenants(SourceName, []config.Tenant{t}); err != nil {
			return invalid(err, t.ID)
		}
		return nil
	}
	claimed := map[string]owner{}
	for i := range file.Tenants {
		for _, d := range file.Tenants[i].Domains {
			claimed[strings.ToLower(d)] = owner{Tenant: file.Tenants[i].ID, Source: "file " + file.File}
		}
	}
	others := make([]Doc, 0, len(docs)+1)
	for _, d := range docs {
		if d.ID == t.ID {
			continue
		}
		others = append(others, d)
		if ot, err := d.Tenant(); err == nil {
			for _, dom := range ot.Domains {
				claimed[strings.ToLower(dom)] = owner{Tenant: d.ID, Source: SourceName}
			}
		}
	}
	for _, d := range t.Domains {
		if o, ok := claimed[strings.ToLower(d)]; ok {
			return conflict(&ConflictError{What: "domain", Value: d, Owner: o.Tenant, Source: o.Source})
		}
	}
	extra := make([]config.Tenant, 0, len(others)+1)
	for _, d := range others {
		if ot, err := d.Tenant(); err == nil {
			extra = append(extra, ot)
		}
	}
	if _, err := file.WithTenants(SourceName, append(extra, t)); err != nil {
		return invalid(err, t.ID)
	}
	return nil
}

// invalid is a 400 listing each problem; those about tenant id lose the
// config file's location (the tenant is not in the file).
func invalid(err error, id string) *jsonapi.Error {
	var msgs []string
	for _, e := range flatten(err) {
		m := e.Error()
		if id != "" {
			if i := strings.Index(m, fmt.Sprintf("tenant %q: ", id)); i >= 0 {
				m = m[i:]
			}
		}
		msgs = append(msgs, m)
	}
	e := jsonapi.Fail(http.StatusBadRequest, "invalid_tenant", "the tenant document is not valid (%d problems)", len(msgs))
	e.Errs = msgs
	return e
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

func conflict(ce *ConflictError) *jsonapi.Error {
	e := jsonapi.Fail(http.StatusConflict, "conflict", "%s", ce.Error())
	e.Extra = map[string]any{"owner": owner{Tenant: ce.Owner, Source: ce.Source}}
	return e
}

// storeError maps the store's errors to answers.
func (a *API) storeError(err error, id string) error {
	var ae *jsonapi.Error
	var ce *ConflictError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &ce):
		return conflict(ce)
	case errors.Is(err, ErrNotFound):
		return jsonapi.Fail(http.StatusNotFound, "not_found", "no tenant %q in the tenant store", id)
	case errors.Is(err, ErrVersionMismatch):
		return jsonapi.Fail(http.StatusPreconditionFailed, "version_mismatch", "tenant %q changed since the version of If-Match; GET it again", id)
	}
	return err
}

// record audits one write: who, what, the outcome, and the version made.
func (a *API) record(ctx context.Context, c Caller, action, id string, d Doc, err error) {
	ev := audit.Event{Component: "authz", Action: action, Actor: c.Actor(), Target: id, Outcome: audit.OK,
		Detail: map[string]any{"source": SourceName}}
	if err != nil {
		ev.Outcome, ev.Error = audit.Error, err.Error() // a *jsonapi.Error's names each problem
	} else {
		ev.Detail["version"] = d.Version
		ev.Detail["suspended"] = d.Suspended
		if t, terr := d.Tenant(); terr == nil {
			ev.Detail["domains"] = t.Domains
		}
	}
	a.Audit.Record(ctx, ev)
}
