package tenantstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
)

func testutilGauge(s *Source) float64 { return testutil.ToFloat64(s.conflict) }

func openStore(t *testing.T) (*Store, *testenv.Postgres) {
	t.Helper()
	pg := testenv.StartPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := Open(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, pg
}

func tenantDoc(id string, domains ...string) (json.RawMessage, config.Tenant) {
	d, _ := json.Marshal(domains)
	doc := json.RawMessage(fmt.Sprintf(`{"id": %q, "domains": %s, "jwt": {"issuer": "i", "audiences": ["a"], "jwks_file": "k.json"}}`, id, d))
	t, err := config.ParseTenant("test", doc)
	if err != nil {
		panic(err)
	}
	return doc, t
}

func TestStoreWritesVersionsAndConflicts(t *testing.T) {
	st, _ := openStore(t)
	ctx := context.Background()
	now := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	// A second Open (another replica) migrates nothing twice.
	if st2, err := Open(ctx, st.conf.ConnString()); err != nil {
		t.Fatal(err)
	} else {
		st2.Close()
	}
	doc, beta := tenantDoc("beta", "beta.test", "www.beta.test")
	d, err := st.Create(ctx, doc, beta, "alice@ops", now)
	if err != nil {
		t.Fatal(err)
	}
	if d.Version != 1 || d.UpdatedBy != "alice@ops" || !d.UpdatedAt.Equal(now) || d.Suspended {
		t.Fatalf("created %+v", d)
	}
	if got, err := d.Tenant(); err != nil || got.ID != "beta" || len(got.Domains) != 2 {
		t.Fatalf("stored document decodes to %+v, %v", got, err)
	}
	var ce *ConflictError
	if _, err := st.Create(ctx, doc, beta, "bob@ops", now); !errors.As(err, &ce) || ce.What != "id" {
		t.Fatalf("second create of beta: %v", err)
	}
	gdoc, gamma := tenantDoc("gamma", "gamma.test", "WWW.BETA.test")
	if _, err := st.Create(ctx, gdoc, gamma, "bob@ops", now); !errors.As(err, &ce) || ce.What != "domain" || ce.Owner != "beta" {
		t.Fatalf("domain claimed twice: %v", err)
	}
	if _, err := st.Get(ctx, "gamma"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused create left a row: %v", err)
	}
	// Update: the version must match; the domains move with the document.
	doc2, beta2 := tenantDoc("beta", "beta.test", "api.beta.test")
	if _, err := st.Update(ctx, doc2, beta2, 7, "bob@ops", now); !errors.Is(err, ErrVersionMismatch) {
		t.Fatalf("stale update: %v", err)
	}
	d, err = st.Update(ctx, doc2, beta2, 1, "bob@ops", now.Add(time.Minute))
	if err != nil || d.Version != 2 || d.UpdatedBy != "bob@ops" {
		t.Fatalf("update: %+v, %v", d, err)
	}
	if _, err := st.Create(ctx, gdoc, gamma, "bob@ops", now); err != nil {
		t.Fatalf("www.beta.test was released by the update, yet: %v", err)
	}
	d, err = st.SetSuspended(ctx, "beta", true, 0, "carol@ops", now)
	if err != nil || !d.Suspended || d.Version != 3 {
		t.Fatalf("suspend: %+v, %v", d, err)
	}
	if bt, _ := d.Tenant(); bt.IsActive() {
		t.Fatal("a suspended tenant decodes as active")
	}
	if _, err := st.Delete(ctx, "beta", 2); !errors.Is(err, ErrVersionMismatch) {
		t.Fatalf("stale delete: %v", err)
	}
	if _, err := st.Delete(ctx, "beta", 3); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Delete(ctx, "beta", 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	adoc, alpha := tenantDoc("alpha", "beta.test")
	if _, err := st.Create(ctx, adoc, alpha, "x@ops", now); err != nil {
		t.Fatalf("a deleted tenant's domain stays claimed: %v", err)
	}
	list, err := st.List(ctx)
	if err != nil || len(list) != 2 || list[0].ID != "alpha" || list[1].ID != "gamma" {
		t.Fatalf("list: %+v, %v", list, err)
	}
}

// follow collects what Follow applies.
type follow struct {
	mu   sync.Mutex
	sets [][]Doc
}

func (f *follow) apply(docs []Doc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sets = append(f.sets, docs)
}

func (f *follow) waitFor(t *testing.T, what string, ok func([]Doc) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		f.mu.Lock()
		var last []Doc
		if len(f.sets) > 0 {
			last = f.sets[len(f.sets)-1]
		}
		f.mu.Unlock()
		if ok(last) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("follower never saw %s", what)
}

func ids(docs []Doc) []string {
	var out []string
	for _, d := range docs {
		out = append(out, fmt.Sprintf("%s@%d", d.ID, d.Version))
	}
	return out
}

func TestFollowSeesNotifyResyncAndReconnects(t *testing.T) {
	st, _ := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	now := time.Now()
	doc, beta := tenantDoc("beta", "beta.test")
	if _, err := st.Create(ctx, doc, beta, "a@ops", now); err != nil {
		t.Fatal(err)
	}
	f := &follow{}
	var evMu sync.Mutex
	events := map[string]int{}
	done, err := st.Follow(ctx, FollowOptions{Resync: 700 * time.Millisecond, Retry: 100 * time.Millisecond, Event: func(k string) {
		evMu.Lock()
		events[k]++
		evMu.Unlock()
	}}, f.apply)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.sets) != 1 || !slices.Equal(ids(f.sets[0]), []string{"beta@1"}) {
		t.Fatalf("first read: %v", f.sets)
	}
	// NOTIFY: one change, seen at once.
	gdoc, gamma := tenantDoc("gamma", "gamma.test")
	start := time.Now()
	if _, err := st.Create(ctx, gdoc, gamma, "a@ops", now); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, "gamma", func(d []Doc) bool { return slices.Equal(ids(d), []string{"beta@1", "gamma@1"}) })
	t.Logf("create → follower: %v", time.Since(start))
	if _, err := st.SetSuspended(ctx, "gamma", true, 1, "a@ops", now); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, "gamma suspended", func(d []Doc) bool { return len(d) == 2 && d[1].Suspended && d[1].Version == 2 })
	if _, err := st.Delete(ctx, "beta", 0); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, "beta deleted", func(d []Doc) bool { return slices.Equal(ids(d), []string{"gamma@2"}) })

	// A write that sends no notification (an operator's SQL) is seen by the resync.
	if _, err := st.db.ExecContext(ctx, `UPDATE kailash_tenants SET version = 9 WHERE id = 'gamma'`); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, "the silent change (resync)", func(d []Doc) bool { return slices.Equal(ids(d), []string{"gamma@9"}) })

	// The listening connection is cut: the follower reconnects, reads all,
	// and sees changes made while it was away.
	if _, err := st.db.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'kailash-tenant-store-listen'`); err != nil {
		t.Fatal(err)
	}
	ddoc, delta := tenantDoc("delta", "delta.test")
	if _, err := st.Create(ctx, ddoc, delta, "a@ops", now); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, "delta after the reconnect", func(d []Doc) bool { return slices.Equal(ids(d), []string{"delta@1", "gamma@9"}) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		evMu.Lock()
		n := events["reconnect"] + events["resync"]
		evMu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no reconnect or resync event counted")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Cancel stops it, and nothing is applied after.
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Follow did not stop on cancel")
	}
	f.mu.Lock()
	n := len(f.sets)
	f.mu.Unlock()
	if _, err := st.SetSuspended(context.Background(), "delta", true, 0, "a@ops", now); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.sets) != n {
		t.Fatal("applied after Follow stopped")
	}
}

// fileConfig is a kailash.yaml with the admin tenant ops and a tenant store.
func fileConfig(t testing.TB) *config.Config {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "k.json"), []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	body := "envoy: {listen: 127.0.0.1:1}\nxds: {grpc: 127.0.0.1:2}\nauthz: {grpc: 127.0.0.1:3, http: 127.0.0.1:5}\nrunner: {http: 127.0.0.1:4}\n" +
		"tenant_store: {postgres_dsn: 'postgres://x@127.0.0.1/db', admin_tenant: ops}\n" +
		"tenants:\n  - id: ops\n    domains: [ops.test]\n    jwt: {issuer: i, audiences: [a], jwks_file: k.json}\n"
	p := filepath.Join(dir, "kailash.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSourceKeepsLastGoodOnConflict(t *testing.T) {
	file := fileConfig(t)
	src := NewSource(file, slog.New(slog.NewTextHandler(io.Discard, nil)))
	doc, _ := tenantDoc("beta", "beta.test")
	src.SetDocs([]Doc{{ID: "beta", Document: doc, Version: 1}})
	first, err := src.Config()
	if err != nil || len(first.Tenants) != 2 {
		t.Fatalf("first: %v", err)
	}
	var applied []*config.Config
	src.Start(func(c *config.Config) error { applied = append(applied, c); return nil })
	// The file now claims beta's domain: refused, the last good stays.
	b, _ := os.ReadFile(file.File)
	bad := string(b) + "  - id: other\n    domains: [BETA.test]\n    jwt: {issuer: i, audiences: [a], jwks_file: k.json}\n"
	if err := os.WriteFile(file.File, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	badFile, err := config.Load(file.File)
	if err != nil {
		t.Fatal(err)
	}
	n := len(applied)
	if err := src.SetFile(badFile); err == nil {
		t.Fatal("a domain claimed by the file and the store was applied")
	}
	if len(applied) != n || src.InForce() != applied[n-1] || src.Err() == nil {
		t.Fatalf("the last good combination is not kept (applied %d→%d, err %v)", n, len(applied), src.Err())
	}
	if got := testutilGauge(src); got != 1 {
		t.Fatalf("kailash_tenant_store_conflict = %v, want 1", got)
	}
	// The store gives the domain up: the file's revision now combines and applies.
	doc2, _ := tenantDoc("beta", "beta2.test")
	src.SetDocs([]Doc{{ID: "beta", Document: doc2, Version: 2}})
	if src.Err() != nil || len(applied) != n+1 || len(src.InForce().Tenants) != 3 {
		t.Fatalf("resolved conflict not applied: %v", src.Err())
	}
	if got := testutilGauge(src); got != 0 {
		t.Fatalf("kailash_tenant_store_conflict = %v after the conflict went", got)
	}
}

// TestSourceDecodesOnlyWhatChanged: a store change decodes the changed
// documents only; the others are the tenants in force (their slices
// shared, not decoded again). A document replaced under the same version
// (deleted and created again between two reads) is decoded again.
func TestSourceDecodesOnlyWhatChanged(t *testing.T) {
	file := fileConfig(t)
	src := NewSource(file, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var docs []Doc
	for _, id := range []string{"a", "b", "c"} {
		doc, _ := tenantDoc(id, id+".test")
		docs = append(docs, Doc{ID: id, Document: doc, Version: 1})
	}
	src.SetDocs(docs)
	var applied []*config.Config
	src.Start(func(c *config.Config) error { applied = append(applied, c); return nil })
	first := applied[len(applied)-1]
	tenant := func(c *config.Config, id string) *config.Tenant {
		t.Helper()
		tt, ok := c.Tenant(id)
		if !ok {
			t.Fatalf("no tenant %s", id)
		}
		return tt
	}

	next := append([]Doc(nil), docs...)
	next[1].Suspended, next[1].Version = true, 2
	again, _ := tenantDoc("c", "c2.test")
	next[2].Document = again // same version, another document
	src.SetDocs(next)
	if src.Err() != nil {
		t.Fatal(src.Err())
	}
	second := applied[len(applied)-1]
	if &tenant(second, "a").Domains[0] != &tenant(first, "a").Domains[0] {
		t.Error("unchanged tenant a was decoded again")
	}
	if b := tenant(second, "b"); b.Active == nil || *b.Active || &b.Domains[0] == &tenant(first, "b").Domains[0] {
		t.Errorf("suspended tenant b not decoded again: active %v", b.Active)
	}
	if c := tenant(second, "c"); len(c.Domains) != 1 || c.Domains[0] != "c2.test" {
		t.Errorf("tenant c's new document under the same version not decoded: %v", c.Domains)
	}
	if c := tenant(second, "c"); c.Source != SourceName || c.JWT.RolesClaim != "roles" {
		t.Errorf("a reused tenant lost its source or defaults: %q %q", c.Source, c.JWT.RolesClaim)
	}
	// A bad document is refused, the good ones still come from the last
	// combination.
	bad := append([]Doc(nil), next...)
	bad[0].Document = json.RawMessage(`{"id": "a", "domainz": []}`)
	src.SetDocs(bad)
	if src.Err() == nil || !strings.Contains(src.Err().Error(), "domainz") {
		t.Fatalf("bad document: %v", src.Err())
	}
	if src.InForce() != second {
		t.Fatal("the last good combination is not kept")
	}
}

// TestSourceValidatesOnlyWhatChanged: a change of a few stored tenants is
// validated on its own (config.WithTenantsPatch: the combination's index
// is carried on, not built again) and composes what the full validation
// composes; a change the patch refuses gets the full validation's error.
func TestSourceValidatesOnlyWhatChanged(t *testing.T) {
	file := fileConfig(t)
	src := NewSource(file, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var docs []Doc
	for _, id := range []string{"a", "b", "c", "d"} {
		doc, _ := tenantDoc(id, id+".test")
		docs = append(docs, Doc{ID: id, Document: doc, Version: 1})
	}
	src.SetDocs(docs)
	src.Start(func(*config.Config) error { return nil })
	idx := src.last.idx
	if idx == nil || idx.Len() != len(docs)+1 {
		t.Fatalf("index after the first composition: %v", idx)
	}
	steps := []struct {
		name string
		edit func([]Doc) []Doc
		want string // the error; "" when the edit applies
	}{
		{"suspend", func(d []Doc) []Doc { d[1].Suspended = true; return d }, ""},
		{"new domain", func(d []Doc) []Doc { d[2].Document, _ = tenantDoc("c", "c2.test"); return d }, ""},
		{"removed", func(d []Doc) []Doc { return append(d[:3:3], d[4:]...) }, ""},
		{"created, taking a freed domain", func(d []Doc) []Doc {
			doc, _ := tenantDoc("e", "c.test")
			return append(d, Doc{ID: "e", Document: doc})
		}, ""},
		{"a domain taken", func(d []Doc) []Doc { d[0].Document, _ = tenantDoc("a", "B.test"); return d }, `tenant "b": domains: "b.test" is already served by tenant "a"`},
	}
	for _, st := range steps {
		next := st.edit(append([]Doc(nil), src.Docs()...))
		src.SetDocs(next)
		if st.want != "" {
			if src.Err() == nil || !strings.Contains(src.Err().Error(), st.want) {
				t.Fatalf("%s: err %v, want %q", st.name, src.Err(), st.want)
			}
			continue
		}
		if src.Err() != nil {
			t.Fatalf("%s: %v", st.name, src.Err())
		}
		if src.last.idx != idx {
			t.Fatalf("%s: validated in full (a new index)", st.name)
		}
		full, err := Compose(file, next)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(src.InForce(), full) {
			t.Fatalf("%s: the patched combination differs from the full one", st.name)
		}
	}
}

// TestFollowerPushOneKeepsOrder: one document changed, added or gone is
// applied as the sorted list a full push gives, without changing the
// list given before.
func TestFollowerPushOneKeepsOrder(t *testing.T) {
	var got [][]Doc
	f := &follower{docs: map[string]Doc{}, apply: func(d []Doc) { got = append(got, d) }}
	for _, id := range []string{"d", "b", "f"} {
		f.docs[id] = Doc{ID: id, Version: 1}
	}
	f.push()
	ids := func(ds []Doc) string {
		var b strings.Builder
		for _, d := range ds {
			fmt.Fprintf(&b, "%s%d ", d.ID, d.Version)
		}
		return b.String()
	}
	for _, st := range []struct {
		id   string
		gone bool
		want string
	}{
		{"b", false, "b2 d1 f1 "}, {"a", false, "a2 b2 d1 f1 "}, {"g", false, "a2 b2 d1 f1 g2 "},
		{"e", false, "a2 b2 d1 e2 f1 g2 "}, {"d", true, "a2 b2 e2 f1 g2 "}, {"a", true, "b2 e2 f1 g2 "}, {"g", true, "b2 e2 f1 "},
	} {
		before := ids(got[len(got)-1])
		prev := got[len(got)-1]
		if st.gone {
			delete(f.docs, st.id)
			f.pushOne(st.id, nil)
		} else {
			d := Doc{ID: st.id, Version: 2}
			f.docs[st.id] = d
			f.pushOne(st.id, &d)
		}
		if s := ids(got[len(got)-1]); s != st.want {
			t.Fatalf("after %s (gone %v): %s, want %s", st.id, st.gone, s, st.want)
		}
		if ids(prev) != before {
			t.Fatalf("the list given before changed: %s, was %s", ids(prev), before)
		}
	}
}
