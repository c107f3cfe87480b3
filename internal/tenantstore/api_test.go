package tenantstore

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/audit"
	"github.com/kailash-gw/kailash/internal/config"
)

// apiServer is the API over a real store, its source following the store,
// callers named by the test header x-test-caller ("tenant/subject").
func apiServer(t *testing.T) (*httptest.Server, string) {
	t.Helper()
	st, _ := openStore(t)
	src := NewSource(fileConfig(t), slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done, err := st.Follow(ctx, FollowOptions{}, src.SetDocs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-done })
	src.Start(func(*config.Config) error { return nil })
	auditFile := filepath.Join(t.TempDir(), "audit.jsonl")
	aud, err := audit.New(audit.Options{File: auditFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { aud.Close() })
	api := &API{Store: st, Source: src, Audit: aud, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), AdminTenant: "ops",
		Authenticate: func(r *http.Request) (Caller, error) {
			c, ok := strings.CutPrefix(r.Header.Get("x-test-caller"), "")
			tenant, sub, found := strings.Cut(c, "/")
			if !ok || !found {
				return Caller{}, errors.New("no identity token")
			}
			return Caller{Tenant: tenant, Subject: sub}, nil
		}}
	mux := http.NewServeMux()
	api.Routes(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, auditFile
}

type answer struct {
	status int
	etag   string
	body   map[string]any
}

func call(t *testing.T, srv *httptest.Server, caller, method, path, body string, hdr ...string) answer {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if caller != "" {
		req.Header.Set("x-test-caller", caller)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, etag: resp.Header.Get("ETag")}
	b, _ := io.ReadAll(resp.Body)
	if len(b) > 0 {
		if err := json.Unmarshal(b, &a.body); err != nil {
			t.Fatalf("%s %s: body %q: %v", method, path, b, err)
		}
	}
	return a
}

const betaDoc = `{"id": "beta", "domains": ["beta.test"], "plan": "pro", "jwt": {"issuer": "i", "audiences": ["a"], "jwks_file": "k.json"}}`

func TestAPIWritesValidatesAndAudits(t *testing.T) {
	srv, auditFile := apiServer(t)
	admin := "ops/alice"
	P := "/v1/admin/tenants"

	if a := call(t, srv, "", "GET", P, ""); a.status != 401 {
		t.Fatalf("no identity: %d", a.status)
	}
	if a := call(t, srv, "acme/mallory", "POST", P, betaDoc); a.status != 403 {
		t.Fatalf("another tenant's identity: %d", a.status)
	}
	a := call(t, srv, admin, "POST", P, betaDoc)
	if a.status != 201 || a.etag != `"1"` || a.body["version"] != 1.0 || a.body["updated_by"] != "alice@ops" {
		t.Fatalf("create: %+v", a)
	}
	// The config's field-naming errors, all at once.
	a = call(t, srv, admin, "POST", P, "{\n\"id\": \"gamma\",\n\"domainz\": [\"g.test\"],\n\"jwt\": {\"issuer\": 5, \"audiences\": \"a\"}\n}")
	if a.status != 400 || a.body["error"] != "invalid_tenant" || !strings.Contains(join(a.body["errors"]), "request body:3:1: domainz: unknown key") {
		t.Fatalf("unknown key: %+v", a)
	}
	a = call(t, srv, admin, "POST", P, `{"id": "gamma", "domains": ["not a host"], "jwt": {"audiences": ["a"], "jwks_file": "k.json"}}`)
	if errs := join(a.body["errors"]); a.status != 400 || !strings.Contains(errs, `tenant "gamma": domains: "not a host" is not a host name`) ||
		!strings.Contains(errs, `tenant "gamma": jwt.issuer: required`) || strings.Contains(errs, "kailash.yaml") {
		t.Fatalf("validation: %+v", a)
	}
	// YAML is the same document.
	if a = call(t, srv, admin, "POST", P, "id: yml\ndomains: [yml.test]\njwt: {issuer: i, audiences: [a], jwks_file: k.json}\n", "Content-Type", "application/yaml"); a.status != 201 {
		t.Fatalf("yaml create: %+v", a)
	}
	// 409s name the owner: the file's tenant, or the store's.
	a = call(t, srv, admin, "POST", P, `{"id": "gamma", "domains": ["OPS.test"], "jwt": {"issuer": "i", "audiences": ["a"], "jwks_file": "k.json"}}`)
	if o, _ := a.body["owner"].(map[string]any); a.status != 409 || o["tenant"] != "ops" || !strings.HasPrefix(o["source"].(string), "file ") {
		t.Fatalf("domain of the file: %+v", a)
	}
	a = call(t, srv, admin, "POST", P, `{"id": "ops", "domains": ["x.test"], "jwt": {"issuer": "i", "audiences": ["a"], "jwks_file": "k.json"}}`)
	if a.status != 409 || !strings.Contains(a.body["message"].(string), `tenant "ops" already exists`) {
		t.Fatalf("id of the file: %+v", a)
	}
	a = call(t, srv, admin, "POST", P, `{"id": "gamma", "domains": ["beta.test"], "jwt": {"issuer": "i", "audiences": ["a"], "jwks_file": "k.json"}}`)
	if o, _ := a.body["owner"].(map[string]any); a.status != 409 || o["tenant"] != "beta" || o["source"] != SourceName {
		t.Fatalf("domain of the store: %+v", a)
	}
	if a = call(t, srv, admin, "POST", P, betaDoc); a.status != 409 {
		t.Fatalf("id of the store: %+v", a)
	}
	// PUT: If-Match is required and must be current.
	upd := strings.Replace(betaDoc, `"pro"`, `"enterprise"`, 1)
	if a = call(t, srv, admin, "PUT", P+"/beta", upd); a.status != 428 {
		t.Fatalf("PUT without If-Match: %d", a.status)
	}
	if a = call(t, srv, admin, "PUT", P+"/beta", upd, "If-Match", `"5"`); a.status != 412 {
		t.Fatalf("PUT with a stale If-Match: %d", a.status)
	}
	if a = call(t, srv, admin, "PUT", P+"/other", upd, "If-Match", `"1"`); a.status != 400 {
		t.Fatalf("PUT renaming: %d", a.status)
	}
	a = call(t, srv, admin, "PUT", P+"/beta", upd, "If-Match", `"1"`)
	if tn, _ := a.body["tenant"].(map[string]any); a.status != 200 || a.etag != `"2"` || tn["plan"] != "enterprise" {
		t.Fatalf("PUT: %+v", a)
	}
	if a = call(t, srv, admin, "POST", P+"/beta/suspend", ""); a.status != 200 || a.body["suspended"] != true || a.etag != `"3"` {
		t.Fatalf("suspend: %+v", a)
	}
	if a = call(t, srv, admin, "POST", P+"/beta/resume", "", "If-Match", `"3"`); a.status != 200 || a.body["suspended"] != false {
		t.Fatalf("resume: %+v", a)
	}
	if a = call(t, srv, admin, "GET", P+"/beta", ""); a.status != 200 || a.etag != `"4"` {
		t.Fatalf("get: %+v", a)
	}
	if a = call(t, srv, admin, "GET", P, ""); a.status != 200 || len(a.body["tenants"].([]any)) != 2 {
		t.Fatalf("list: %+v", a)
	}
	if a = call(t, srv, admin, "DELETE", P+"/beta", ""); a.status != 204 {
		t.Fatalf("delete: %+v", a)
	}
	if a = call(t, srv, admin, "GET", P+"/beta", ""); a.status != 404 {
		t.Fatalf("get after delete: %+v", a)
	}

	// Every write is audited: who, what, the outcome; refusals too.
	type ev struct {
		Action, Actor, Target, Outcome, Error string
		Detail                                map[string]any
		Time                                  time.Time
	}
	var evs []ev
	f, err := os.Open(auditFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e ev
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
	}
	want := []string{"tenant.add beta ok", "tenant.add  error", "tenant.add gamma error", "tenant.add yml ok",
		"tenant.add gamma error", "tenant.add ops error", "tenant.add gamma error", "tenant.add beta error",
		"tenant.change beta error", "tenant.change beta error", "tenant.change other error", "tenant.change beta ok",
		"tenant.suspend beta ok", "tenant.resume beta ok", "tenant.remove beta ok"}
	var got []string
	for _, e := range evs {
		got = append(got, e.Action+" "+e.Target+" "+e.Outcome)
		if e.Actor != "alice@ops" || e.Time.IsZero() {
			t.Errorf("event %+v: actor or time missing", e)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if e := evs[11]; e.Detail["version"] != 2.0 || !strings.Contains(join(e.Detail["domains"]), "beta.test") {
		t.Fatalf("change event detail: %+v", e)
	}
	if e := evs[4]; !strings.Contains(e.Error, `already served by tenant "ops"`) {
		t.Fatalf("conflict event: %+v", e)
	}
}

func join(v any) string {
	l, _ := v.([]any)
	var s []string
	for _, x := range l {
		s = append(s, x.(string))
	}
	return strings.Join(s, "\n")
}

// BenchmarkAdminCheck is the admin API's check of a new tenant among
// 20,000 stored ones: "indexed" against the combination in force (its
// index, and the tenant validated with the file's alone), "full" when the
// newest contents are not in force (every document decoded and the whole
// combination validated).
func BenchmarkAdminCheck(b *testing.B) {
	var docs []Doc
	for i := range 20_000 {
		id := fmt.Sprintf("t%05d", i)
		doc, _ := tenantDoc(id, id+".test")
		docs = append(docs, Doc{ID: id, Document: doc, Version: 1})
	}
	_, fresh := tenantDoc("new", "new.test")
	for _, bc := range []struct {
		name    string
		started bool
	}{{"indexed", true}, {"full", false}} {
		b.Run(bc.name, func(b *testing.B) {
			src := NewSource(fileConfig(b), slog.New(slog.NewTextHandler(io.Discard, nil)))
			src.SetDocs(docs)
			if bc.started {
				src.Start(func(*config.Config) error { return nil })
			}
			if _, ok := src.claims(); ok != bc.started {
				b.Fatalf("indexed path available: %v", ok)
			}
			a := &API{Source: src}
			for b.Loop() {
				if err := a.check(fresh, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
