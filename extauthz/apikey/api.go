package apikey

import (
	"context"
	"errors"
	"fmt"
	"github.com/kailash-gw/kailash/internal/jsonapi"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/kailash-gw/kailash/internal/audit"
	"github.com/kailash-gw/kailash/internal/strictjson"
	"github.com/kailash-gw/kailash/internal/wire"
)

// Keys is where the admin API reads and writes keys: the store authz
// verifies against (the keys file, or sessions.redis), so that a change
// is in force on the next request.
type Keys interface {
	// List is every key (all tenants).
	List(ctx context.Context) ([]Key, error)
	// Put writes k: a new key, or a rotated or revoked one (same id).
	Put(ctx context.Context, k Key) error
	// LastUsed is each key's last use (by any replica, where known).
	LastUsed(ctx context.Context) (map[string]time.Time, error)
}

// Caller is who called the API, from the identity token ext_authz signed
// for the request after the policy allowed it.
type Caller struct {
	Tenant, Subject string
}

// Actor is the caller as audit events name it.
func (c Caller) Actor() string { return c.Subject + "@" + c.Tenant }

// API is the tenants' API keys admin API (wire.AdminAPIKeysPath), served
// on authz's HTTP port and reached through Envoy with ext_authz on: on the
// admin tenant's domains for any tenant's keys, on a tenant's own domains
// for its own. The policy decides every call (the shipped bundle:
// apikey:manage for the route tenant's own keys, system:configure on the
// admin tenant's domains for another's). Here a call must also carry the
// identity token ext_authz signs on allow — the proof that it came that
// way, which names the audit event's actor — and, defence in depth, an
// identity not of the admin tenant may touch its own tenant's keys only.
type API struct {
	Keys  Keys
	Audit *audit.Logger
	Log   *slog.Logger
	// Authenticate verifies the request's identity token.
	Authenticate func(*http.Request) (Caller, error)
	// AdminTenant is tenant_store.admin_tenant ("": none; each tenant
	// manages its own keys only).
	AdminTenant string
	// Tenant reports whether a tenant is served (the file's and the
	// tenant store's).
	Tenant func(id string) bool
	Now    func() time.Time
}

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 64 << 10

// Routes registers the API on mux.
func (a *API) Routes(mux *http.ServeMux) {
	p := wire.AdminTenantsPath + "/{tenant}/" + wire.AdminAPIKeysSegment
	mux.HandleFunc("GET "+p, a.wrap(a.list))
	mux.HandleFunc("POST "+p, a.wrap(a.create))
	mux.HandleFunc("GET "+p+"/{id}", a.wrap(a.get))
	mux.HandleFunc("POST "+p+"/{id}/rotate", a.wrap(a.rotate))
	mux.HandleFunc("DELETE "+p+"/{id}", a.wrap(a.revoke))
}

type handler func(ctx context.Context, c Caller, tenant string, w http.ResponseWriter, r *http.Request) error

func (a *API) wrap(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := a.Authenticate(r)
		if err != nil {
			jsonapi.WriteError(w, jsonapi.Fail(http.StatusUnauthorized, "unauthenticated", "the API keys API is reached through Envoy, which the policy authorizes: %v", err))
			return
		}
		tenant := r.PathValue("tenant")
		if c.Tenant != tenant && (a.AdminTenant == "" || c.Tenant != a.AdminTenant) {
			jsonapi.WriteError(w, jsonapi.Fail(http.StatusForbidden, "forbidden", "an identity of tenant %q manages its own tenant's API keys only", c.Tenant))
			return
		}
		if a.Tenant != nil && !a.Tenant(tenant) {
			jsonapi.WriteError(w, jsonapi.Fail(http.StatusNotFound, "not_found", "no tenant %q", tenant))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		if err := h(r.Context(), c, tenant, w, r); err != nil {
			var ae *jsonapi.Error
			if !errors.As(err, &ae) {
				a.Log.Error("API keys admin API failed", "method", r.Method, "path", r.URL.Path, "err", err)
				ae = jsonapi.Fail(http.StatusServiceUnavailable, "store_unavailable", "the API key store failed; try again")
			}
			jsonapi.WriteError(w, ae)
		}
	}
}

func (a *API) now() time.Time {
	if a.Now != nil {
		return a.Now().UTC()
	}
	return time.Now().UTC()
}

// View is a key as the API shows it: never its hash or secret.
type View struct {
	ID        string     `json:"id"`
	Tenant    string     `json:"tenant"`
	Name      string     `json:"name"`
	Subject   string     `json:"subject"`
	Roles     []string   `json:"roles"`
	CIDRs     []string   `json:"cidrs"`
	State     string     `json:"state"` // active, expired, revoked
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	LastUsed  *time.Time `json:"last_used,omitempty"`
}

func view(k Key, lastUsed time.Time, now time.Time) View {
	v := View{ID: k.ID, Tenant: k.Tenant, Name: k.Name, Subject: "sa:" + k.Name, Roles: k.Roles, CIDRs: k.CIDRs,
		State: "active", CreatedAt: k.Created}
	if v.Roles == nil {
		v.Roles = []string{}
	}
	if v.CIDRs == nil {
		v.CIDRs = []string{}
	}
	if !k.Expires.IsZero() {
		e := k.Expires
		v.ExpiresAt = &e
		if !now.Before(e) {
			v.State = "expired"
		}
	}
	if !k.Revoked.IsZero() {
		r := k.Revoked
		v.RevokedAt, v.State = &r, "revoked"
	}
	if !lastUsed.IsZero() {
		v.LastUsed = &lastUsed
	}
	return v
}

// lastUsed is the keys' last uses; a failure to read them is logged and
// leaves them out (they are informational).
func (a *API) lastUsed(ctx context.Context) map[string]time.Time {
	m, err := a.Keys.LastUsed(ctx)
	if err != nil {
		a.Log.Warn("API keys' last use not read", "err", err)
	}
	return m
}

func (a *API) list(ctx context.Context, _ Caller, tenant string, w http.ResponseWriter, _ *http.Request) error {
	keys, err := a.Keys.List(ctx)
	if err != nil {
		return err
	}
	used, now := a.lastUsed(ctx), a.now()
	out := []View{}
	for _, k := range keys {
		if k.Tenant == tenant {
			out = append(out, view(k, used[k.ID], now))
		}
	}
	jsonapi.Write(w, http.StatusOK, map[string]any{"api_keys": out})
	return nil
}

// find is tenant's key id (404 when it is none, or another tenant's).
func (a *API) find(ctx context.Context, tenant, id string) (Key, error) {
	keys, err := a.Keys.List(ctx)
	if err != nil {
		return Key{}, err
	}
	i := slices.IndexFunc(keys, func(k Key) bool { return k.ID == id && k.Tenant == tenant })
	if i < 0 {
		return Key{}, jsonapi.Fail(http.StatusNotFound, "not_found", "no API key %q in tenant %q", id, tenant)
	}
	return keys[i], nil
}

func (a *API) get(ctx context.Context, _ Caller, tenant string, w http.ResponseWriter, r *http.Request) error {
	k, err := a.find(ctx, tenant, r.PathValue("id"))
	if err != nil {
		return err
	}
	jsonapi.Write(w, http.StatusOK, view(k, a.lastUsed(ctx)[k.ID], a.now()))
	return nil
}

// createRequest is POST's body.
type createRequest struct {
	Name  string   `json:"name"`
	Roles []string `json:"roles"`
	CIDRs []string `json:"cidrs"`
	// TTL is a Go duration ("720h"); ExpiresAt an RFC 3339 time. At most
	// one; neither: the key does not expire.
	TTL       string `json:"ttl"`
	ExpiresAt string `json:"expires_at"`
}

// created is the answer to create and rotate: the key (shown once) and
// its metadata.
type created struct {
	Key    string `json:"key"`
	APIKey View   `json:"api_key"`
}

func (a *API) create(ctx context.Context, c Caller, tenant string, w http.ResponseWriter, r *http.Request) error {
	req, err := readCreate(r)
	var k Key
	var secret string
	if err == nil {
		k, secret, err = a.newKey(tenant, req)
	}
	if err == nil {
		err = a.Keys.Put(ctx, k)
	}
	if k.Name == "" {
		k.Name = req.Name // refused: the event still names what was asked for
	}
	a.record(ctx, c, audit.KeyAdd, tenant, k, err, map[string]any{"roles": k.Roles, "cidrs": k.CIDRs})
	if err != nil {
		return err
	}
	w.Header().Set("Location", wire.AdminAPIKeysPath(tenant)+"/"+k.ID)
	jsonapi.Write(w, http.StatusCreated, created{Key: secret, APIKey: view(k, time.Time{}, a.now())})
	return nil
}

// readCreate decodes the body strictly: an unknown or mistyped field is a
// 400 naming it.
func readCreate(r *http.Request) (createRequest, error) {
	var req createRequest
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return req, jsonapi.Fail(http.StatusRequestEntityTooLarge, "too_large", "the body is larger than %d bytes", MaxBodyBytes)
	}
	if err := strictjson.Unmarshal(b, &req); err != nil {
		e := jsonapi.Fail(http.StatusBadRequest, "bad_request", "the body is not an API key request (name, roles, cidrs, ttl or expires_at)")
		e.Errs = []string{err.Error()}
		return req, e
	}
	return req, nil
}

// newKey validates req (422 naming each field at fault) and makes the key.
func (a *API) newKey(tenant string, req createRequest) (Key, string, error) {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	switch {
	case req.Name == "":
		bad("name: required (the service account: its identity is sa:<name>)")
	case !validName(req.Name):
		bad("name: %q: want letters, digits, '.', '_', '-' or '@' (at most 64)", req.Name)
	}
	roles := make([]string, 0, len(req.Roles))
	for i, role := range req.Roles {
		role = strings.TrimSpace(role)
		if role == "" || strings.ContainsAny(role, ", \t\r\n") {
			bad("roles[%d]: %q: want a role name (no spaces or commas)", i, req.Roles[i])
			continue
		}
		roles = append(roles, role)
	}
	for i, c := range req.CIDRs {
		if _, err := netip.ParsePrefix(c); err != nil {
			bad("cidrs[%d]: %q: want a network such as 10.0.0.0/8", i, c)
		}
	}
	now := a.now()
	var ttl time.Duration
	switch {
	case req.TTL != "" && req.ExpiresAt != "":
		bad("ttl, expires_at: give one of them")
	case req.TTL != "":
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			bad("ttl: %q: want a positive duration such as 720h", req.TTL)
		}
		ttl = d
	case req.ExpiresAt != "":
		t, err := time.Parse(time.RFC3339, req.ExpiresAt)
		switch {
		case err != nil:
			bad("expires_at: %q: want an RFC 3339 time such as 2027-01-31T00:00:00Z", req.ExpiresAt)
		case !t.After(now):
			bad("expires_at: %s is not in the future", req.ExpiresAt)
		default:
			ttl = t.Sub(now)
		}
	}
	if len(errs) > 0 {
		e := jsonapi.Fail(http.StatusUnprocessableEntity, "invalid_api_key", "the API key request is not valid (%d problems)", len(errs))
		e.Errs = errs
		return Key{}, "", e
	}
	if len(roles) == 0 {
		roles = nil
	}
	cidrs := req.CIDRs
	if len(cidrs) == 0 {
		cidrs = nil
	}
	return New(tenant, req.Name, roles, cidrs, ttl, now)
}

func validName(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-@", r)) {
			return false
		}
	}
	return true
}

func (a *API) rotate(ctx context.Context, c Caller, tenant string, w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	k, err := a.find(ctx, tenant, id)
	now := a.now()
	var secret string
	switch {
	case err != nil:
	case !k.Revoked.IsZero():
		err = jsonapi.Fail(http.StatusConflict, "revoked", "API key %q was revoked; create a new one", id)
	case !k.Expires.IsZero() && !now.Before(k.Expires):
		err = jsonapi.Fail(http.StatusConflict, "expired", "API key %q expired; create a new one", id)
	default:
		if k, secret, err = Rotate(k); err == nil {
			err = a.Keys.Put(ctx, k)
		}
	}
	if k.ID == "" {
		k.ID = id
	}
	a.record(ctx, c, audit.KeyRotate, tenant, k, err, nil)
	if err != nil {
		return err
	}
	jsonapi.Write(w, http.StatusOK, created{Key: secret, APIKey: view(k, a.lastUsed(ctx)[k.ID], now)})
	return nil
}

func (a *API) revoke(ctx context.Context, c Caller, tenant string, w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	k, err := a.find(ctx, tenant, id)
	detail := map[string]any{}
	switch {
	case err != nil:
		k.ID = id
	case !k.Revoked.IsZero():
		detail["already_revoked"] = true // idempotent: nothing written
	default:
		k.Revoked = a.now()
		err = a.Keys.Put(ctx, k)
	}
	a.record(ctx, c, audit.KeyRevoke, tenant, k, err, detail)
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// record audits one write: who (the caller), what (tenant, key id and
// name — never the secret or the hash) and how it ended.
func (a *API) record(ctx context.Context, c Caller, action, tenant string, k Key, err error, detail map[string]any) {
	d := map[string]any{"tenant": tenant, "via": "admin api"}
	if k.Name != "" {
		d["name"] = k.Name
	}
	for n, v := range detail {
		d[n] = v
	}
	target := "api key"
	if k.ID != "" {
		target += " " + k.ID
	}
	ev := audit.Event{Component: "authz", Action: action, Actor: c.Actor(), Target: target, Outcome: audit.OK, Detail: d}
	if err != nil {
		ev.Outcome, ev.Error = audit.Error, err.Error()
		var ae *jsonapi.Error
		if !errors.As(err, &ae) {
			ev.Error = "the API key store failed: " + err.Error()
		}
	}
	a.Audit.Record(ctx, ev)
}
