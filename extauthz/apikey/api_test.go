package apikey

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/internal/audit"
)

// fileKeys is Keys over a keys file and a Store that verifies from it, as
// authz's are.
type fileKeys struct {
	path  string
	store *Store
	fail  error // every call fails with it when set
}

func (k *fileKeys) List(context.Context) ([]Key, error) {
	if k.fail != nil {
		return nil, k.fail
	}
	f, err := ReadFile(k.path)
	return f.Keys, err
}

func (k *fileKeys) Put(_ context.Context, key Key) error {
	if k.fail != nil {
		return k.fail
	}
	if err := UpdateFile(k.path, func(f *File) error { f.Upsert(key); return nil }); err != nil {
		return err
	}
	f, err := ReadFile(k.path)
	if err == nil {
		k.store.Replace(f)
	}
	return err
}

func (k *fileKeys) LastUsed(context.Context) (map[string]time.Time, error) {
	return k.store.LastUsedAll(), nil
}

type fixture struct {
	srv       *httptest.Server
	keys      *fileKeys
	auditFile string
	now       time.Time
}

// newFixture serves the API with admin tenant ops and tenants ops, acme,
// globex; callers are named by the test header x-test-caller
// ("tenant/subject"), none: no identity token.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	fx := &fixture{keys: &fileKeys{path: filepath.Join(dir, "apikeys.json"), store: NewStore()},
		auditFile: filepath.Join(dir, "audit.jsonl"), now: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	aud, err := audit.New(audit.Options{File: fx.auditFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { aud.Close() })
	api := &API{Keys: fx.keys, Audit: aud, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), AdminTenant: "ops",
		Tenant: func(id string) bool { return id == "ops" || id == "acme" || id == "globex" },
		Now:    func() time.Time { return fx.now },
		Authenticate: func(r *http.Request) (Caller, error) {
			tenant, sub, ok := strings.Cut(r.Header.Get("x-test-caller"), "/")
			if !ok {
				return Caller{}, errors.New("no identity token: the request did not pass ext_authz")
			}
			return Caller{Tenant: tenant, Subject: sub}, nil
		}}
	mux := http.NewServeMux()
	api.Routes(mux)
	fx.srv = httptest.NewServer(mux)
	t.Cleanup(fx.srv.Close)
	return fx
}

type answer struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
}

func (fx *fixture) call(t *testing.T, caller, method, path, body string) answer {
	t.Helper()
	req, _ := http.NewRequest(method, fx.srv.URL+path, strings.NewReader(body))
	if caller != "" {
		req.Header.Set("x-test-caller", caller)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, raw: string(b)}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &a.body); err != nil {
			t.Fatalf("%s %s: body is not JSON: %s", method, path, b)
		}
	}
	return a
}

const keysOf = "/v1/admin/tenants/acme/api-keys"

func TestAPICreateUseRotateRevoke(t *testing.T) {
	fx := newFixture(t)
	a := fx.call(t, "ops/alice", "POST", keysOf, `{"name": "ci", "roles": ["admin"], "cidrs": ["10.0.0.0/8"], "ttl": "720h"}`)
	if a.status != 201 {
		t.Fatalf("create: %d %s", a.status, a.raw)
	}
	secret, _ := a.body["key"].(string)
	meta, _ := a.body["api_key"].(map[string]any)
	id, _ := meta["id"].(string)
	if !strings.HasPrefix(secret, Prefix+id+"_") || meta["tenant"] != "acme" || meta["name"] != "ci" || meta["subject"] != "sa:ci" ||
		meta["state"] != "active" || meta["expires_at"] != "2027-01-02T12:00:00Z" || fmt.Sprint(meta["roles"]) != "[admin]" || fmt.Sprint(meta["cidrs"]) != "[10.0.0.0/8]" {
		t.Fatalf("create answer: %v", a.body)
	}
	if a.header.Get("Location") != keysOf+"/"+id || a.header.Get("Cache-Control") != "no-store" {
		t.Errorf("headers: %v", a.header)
	}
	if _, hasHash := meta["hash"]; hasHash {
		t.Errorf("the answer shows the hash: %v", meta)
	}
	client := netip.MustParseAddr("10.1.2.3")
	if _, err := fx.keys.store.Verify(secret, "acme", client, fx.now); err != nil {
		t.Fatalf("the created key does not verify: %v", err)
	}

	// List and get: metadata only, with last use.
	l := fx.call(t, "ops/alice", "GET", keysOf, "")
	if l.status != 200 || len(l.body["api_keys"].([]any)) != 1 || strings.Contains(l.raw, "hash") || strings.Contains(l.raw, secret[len(Prefix+id+"_"):]) {
		t.Fatalf("list: %d %s", l.status, l.raw)
	}
	if got := l.body["api_keys"].([]any)[0].(map[string]any)["last_used"]; got != "2026-12-03T12:00:00Z" {
		t.Errorf("last_used %v", got)
	}
	if g := fx.call(t, "acme/eve", "GET", keysOf+"/"+id, ""); g.status != 200 || g.body["id"] != id {
		t.Errorf("get by the tenant's own admin: %d %s", g.status, g.raw)
	}
	if g := fx.call(t, "ops/alice", "GET", "/v1/admin/tenants/globex/api-keys/"+id, ""); g.status != 404 || g.body["error"] != "not_found" {
		t.Errorf("another tenant's key id: %d %s", g.status, g.raw)
	}
	if l := fx.call(t, "ops/alice", "GET", "/v1/admin/tenants/globex/api-keys", ""); l.status != 200 || len(l.body["api_keys"].([]any)) != 0 {
		t.Errorf("globex's keys: %d %s", l.status, l.raw)
	}

	// Rotate: a new secret, the old one refused.
	r := fx.call(t, "acme/eve", "POST", keysOf+"/"+id+"/rotate", "")
	rotated, _ := r.body["key"].(string)
	if r.status != 200 || rotated == "" || rotated == secret || !strings.HasPrefix(rotated, Prefix+id+"_") {
		t.Fatalf("rotate: %d %s", r.status, r.raw)
	}
	if _, err := fx.keys.store.Verify(secret, "acme", client, fx.now); err == nil {
		t.Error("the old secret still verifies after rotate")
	}
	if _, err := fx.keys.store.Verify(rotated, "acme", client, fx.now); err != nil {
		t.Errorf("the rotated secret: %v", err)
	}

	// Revoke: 204, refused, idempotent; rotate after: 409.
	if d := fx.call(t, "ops/alice", "DELETE", keysOf+"/"+id, ""); d.status != 204 {
		t.Fatalf("revoke: %d %s", d.status, d.raw)
	}
	var ae *envoyauth.AuthError
	if _, err := fx.keys.store.Verify(rotated, "acme", client, fx.now); err == nil || !errors.As(err, &ae) || ae.Reason != ReasonRevokedKey {
		t.Errorf("revoked key: %v", err)
	}
	if d := fx.call(t, "ops/alice", "DELETE", keysOf+"/"+id, ""); d.status != 204 {
		t.Errorf("revoke again: %d", d.status)
	}
	if r := fx.call(t, "ops/alice", "POST", keysOf+"/"+id+"/rotate", ""); r.status != 409 || r.body["error"] != "revoked" {
		t.Errorf("rotate a revoked key: %d %s", r.status, r.raw)
	}
	if g := fx.call(t, "ops/alice", "GET", keysOf+"/"+id, ""); g.body["state"] != "revoked" || g.body["revoked_at"] != "2026-12-03T12:00:00Z" {
		t.Errorf("revoked key's state: %s", g.raw)
	}

	// The file holds hashes only, mode 0600.
	b, _ := os.ReadFile(fx.keys.path)
	fi, _ := os.Stat(fx.keys.path)
	if strings.Contains(string(b), secret[len(Prefix+id+"_"):]) || strings.Contains(string(b), rotated[len(Prefix+id+"_"):]) || fi.Mode().Perm() != 0o600 {
		t.Errorf("keys file (%v): %s", fi.Mode(), b)
	}

	// Audit: who, what, never a secret or hash.
	events := readAudit(t, fx.auditFile)
	want := []string{
		"key.add api key " + id + " alice@ops ok acme ci",
		"key.rotate api key " + id + " eve@acme ok acme ci",
		"key.revoke api key " + id + " alice@ops ok acme ci",
		"key.revoke api key " + id + " alice@ops ok acme ci",
		"key.rotate api key " + id + " alice@ops error acme ci",
	}
	if strings.Join(events, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit:\n%s\nwant:\n%s", strings.Join(events, "\n"), strings.Join(want, "\n"))
	}
	ab, _ := os.ReadFile(fx.auditFile)
	f, _ := ReadFile(fx.keys.path)
	if strings.Contains(string(ab), f.Keys[0].Hash) || strings.Contains(string(ab), rotated) || strings.Contains(string(ab), secret) {
		t.Errorf("the audit holds a secret or hash: %s", ab)
	}
}

func readAudit(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e struct {
			Action, Actor, Target, Outcome string
			Detail                         map[string]any
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %s %s %s %v %v", e.Action, e.Target, e.Actor, e.Outcome, e.Detail["tenant"], e.Detail["name"]))
	}
	return out
}

func TestAPIRefusals(t *testing.T) {
	fx := newFixture(t)
	mk := fx.call(t, "acme/eve", "POST", keysOf, `{"name": "ci"}`)
	if mk.status != 201 {
		t.Fatalf("create: %d %s", mk.status, mk.raw)
	}
	id := mk.body["api_key"].(map[string]any)["id"].(string)
	cases := []struct {
		name, caller, method, path, body string
		status                           int
		code                             string
		mention                          string
	}{
		{"no identity token", "", "GET", keysOf, "", 401, "unauthenticated", "did not pass ext_authz"},
		{"another tenant's admin", "globex/mallory", "GET", keysOf, "", 403, "forbidden", `tenant "globex"`},
		{"another tenant's admin, create", "globex/mallory", "POST", keysOf, `{"name": "x"}`, 403, "forbidden", "own tenant"},
		{"another tenant's admin, revoke", "globex/mallory", "DELETE", keysOf + "/" + id, "", 403, "forbidden", "own tenant"},
		{"unknown tenant", "ops/alice", "GET", "/v1/admin/tenants/nope/api-keys", "", 404, "not_found", `"nope"`},
		{"unknown key", "ops/alice", "GET", keysOf + "/zzzz", "", 404, "not_found", `"zzzz"`},
		{"unknown key, rotate", "ops/alice", "POST", keysOf + "/zzzz/rotate", "", 404, "not_found", `"zzzz"`},
		{"unknown key, revoke", "ops/alice", "DELETE", keysOf + "/zzzz", "", 404, "not_found", `"zzzz"`},
		{"not JSON", "ops/alice", "POST", keysOf, `{"name": `, 400, "bad_request", ""},
		{"unknown field", "ops/alice", "POST", keysOf, `{"name": "ci", "role": ["admin"]}`, 400, "bad_request", `"role"`},
		{"mistyped field", "ops/alice", "POST", keysOf, `{"name": "ci", "roles": "admin"}`, 400, "bad_request", "roles"},
		{"no name", "ops/alice", "POST", keysOf, `{}`, 422, "invalid_api_key", "name: required"},
		{"bad name", "ops/alice", "POST", keysOf, `{"name": "c i"}`, 422, "invalid_api_key", "name:"},
		{"bad role", "ops/alice", "POST", keysOf, `{"name": "ci", "roles": ["a,b"]}`, 422, "invalid_api_key", "roles[0]"},
		{"bad cidr", "ops/alice", "POST", keysOf, `{"name": "ci", "cidrs": ["10.0.0.0/8", "nope"]}`, 422, "invalid_api_key", "cidrs[1]"},
		{"bad ttl", "ops/alice", "POST", keysOf, `{"name": "ci", "ttl": "-1h"}`, 422, "invalid_api_key", "ttl:"},
		{"bad expires_at", "ops/alice", "POST", keysOf, `{"name": "ci", "expires_at": "tomorrow"}`, 422, "invalid_api_key", "expires_at:"},
		{"past expires_at", "ops/alice", "POST", keysOf, `{"name": "ci", "expires_at": "2020-01-01T00:00:00Z"}`, 422, "invalid_api_key", "not in the future"},
		{"ttl and expires_at", "ops/alice", "POST", keysOf, `{"name": "ci", "ttl": "1h", "expires_at": "2030-01-01T00:00:00Z"}`, 422, "invalid_api_key", "ttl, expires_at"},
		{"too large", "ops/alice", "POST", keysOf, `{"name": "` + strings.Repeat("a", MaxBodyBytes) + `"}`, 413, "too_large", ""},
	}
	for _, c := range cases {
		a := fx.call(t, c.caller, c.method, c.path, c.body)
		text := fmt.Sprint(a.body["message"], a.body["errors"])
		if a.status != c.status || a.body["error"] != c.code || !strings.Contains(text, c.mention) || a.body["message"] == nil {
			t.Errorf("%s: %d %s, want %d %s mentioning %s", c.name, a.status, a.raw, c.status, c.code, c.mention)
		}
	}
	// Several problems at once, each naming its field.
	a := fx.call(t, "ops/alice", "POST", keysOf, `{"cidrs": ["x"], "ttl": "soon"}`)
	if errs, _ := a.body["errors"].([]any); a.status != 422 || len(errs) != 3 {
		t.Errorf("three problems: %d %s", a.status, a.raw)
	}
	// Expiry: expires_at sets it, and an expired key cannot be rotated.
	e := fx.call(t, "ops/alice", "POST", keysOf, `{"name": "short", "expires_at": "2026-12-03T13:00:00Z"}`)
	eid := e.body["api_key"].(map[string]any)["id"].(string)
	fx.now = fx.now.Add(2 * time.Hour)
	if g := fx.call(t, "ops/alice", "GET", keysOf+"/"+eid, ""); g.body["state"] != "expired" {
		t.Errorf("expired key's state: %s", g.raw)
	}
	if r := fx.call(t, "ops/alice", "POST", keysOf+"/"+eid+"/rotate", ""); r.status != 409 || r.body["error"] != "expired" {
		t.Errorf("rotate an expired key: %d %s", r.status, r.raw)
	}
	// A failing store: 503, audited as an error.
	fx.keys.fail = errors.New("disk on fire")
	if a := fx.call(t, "ops/alice", "POST", keysOf, `{"name": "ci2"}`); a.status != 503 || a.body["error"] != "store_unavailable" || strings.Contains(a.raw, "fire") {
		t.Errorf("store failure: %d %s", a.status, a.raw)
	}
	if ev := readAudit(t, fx.auditFile); !strings.HasPrefix(ev[len(ev)-1], "key.add api key ") || !strings.Contains(ev[len(ev)-1], " error acme ci2") {
		t.Errorf("last audit event: %s", ev[len(ev)-1])
	}
}

// TestAPINoAdminTenant: without tenant_store.admin_tenant each tenant
// manages its own keys only.
func TestAPINoAdminTenant(t *testing.T) {
	fx := newFixture(t)
	fx.srv.Close()
	api := &API{Keys: fx.keys, Log: slog.New(slog.DiscardHandler), Tenant: func(string) bool { return true },
		Authenticate: func(r *http.Request) (Caller, error) { return Caller{Tenant: "", Subject: "x"}, nil }}
	mux := http.NewServeMux()
	api.Routes(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := http.Get(srv.URL + keysOf)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("an identity of no tenant with no admin tenant: %d, want 403", resp.StatusCode)
	}
}

// TestUpdateFileConcurrent: writers in parallel (the API and the CLI)
// lose none of each other's keys.
func TestUpdateFileConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "apikeys.json")
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			k, _, err := New("acme", fmt.Sprintf("sa%d", i), nil, nil, 0, time.Now())
			if err == nil {
				err = UpdateFile(path, func(f *File) error { f.Upsert(k); return nil })
			}
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	f, err := ReadFile(path)
	if err != nil || len(f.Keys) != 20 {
		t.Fatalf("%d keys, %v; want 20", len(f.Keys), err)
	}
}
