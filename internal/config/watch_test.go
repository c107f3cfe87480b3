package config

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakePart records what was committed; it refuses configs with a tenant
// named refuse.
type fakePart struct {
	refuse    string
	committed []string // first tenant id of each committed config
}

func (p *fakePart) Prepare(c *Config) (func(), error) {
	if _, ok := c.Tenant(p.refuse); ok {
		return nil, errors.New("tenant " + p.refuse + ": refused")
	}
	id := c.Tenants[0].ID
	return func() { p.committed = append(p.committed, id) }, nil
}

func TestApplyAllOrNothing(t *testing.T) {
	a, b := &fakePart{refuse: "bad-for-a"}, &fakePart{refuse: "bad-for-b"}
	parts := []Part{{"a", a}, {"b", b}}
	cfg := func(ids ...string) *Config {
		c := &Config{}
		for _, id := range ids {
			c.Tenants = append(c.Tenants, Tenant{ID: id})
		}
		return c
	}
	if err := Apply(cfg("one"), parts...); err != nil {
		t.Fatal(err)
	}
	err := Apply(cfg("two", "bad-for-b"), parts...)
	if err == nil || !strings.HasPrefix(err.Error(), "b: tenant bad-for-b") {
		t.Fatalf("error does not name the refusing part: %v", err)
	}
	err = Apply(cfg("three", "bad-for-a", "bad-for-b"), parts...)
	if err == nil || !strings.Contains(err.Error(), "a: ") || !strings.Contains(err.Error(), "b: ") {
		t.Fatalf("error does not name both refusing parts: %v", err)
	}
	if err := Apply(cfg("four"), parts...); err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]*fakePart{"a": a, "b": b} {
		if got := strings.Join(p.committed, ","); got != "one,four" {
			t.Errorf("%s committed %s, want one,four (a refused revision committed nowhere)", name, got)
		}
	}
}

// TestWatchRejectsAndApplies: a file that does not load and one that a
// component refuses both reach Rejected, never Applied; a valid one is
// Applied as revision 2.
func TestWatchRejectsAndApplies(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kailash.yaml")
	good := func(id string) string {
		jwks := filepath.Join(dir, "jwks.json")
		_ = os.WriteFile(jwks, []byte(`{"keys":[]}`), 0o600)
		return `envoy: {listen: 127.0.0.1:1}
xds: {grpc: 127.0.0.1:2}
authz: {grpc: 127.0.0.1:3}
runner: {http: 127.0.0.1:4}
tenants:
  - id: ` + id + `
    domains: [` + id + `.localhost]
    jwt: {issuer: i, audiences: [a], jwks_file: ` + jwks + `}
`
	}
	write := func(s string) {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(good("start"))
	part := &fakePart{refuse: "refused"}
	var mu sync.Mutex
	var rejected []error
	var applied []Revision
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, path, slog.New(slog.DiscardHandler), Watcher{
			Apply:    func(c *Config) error { return Apply(c, Part{"fake", part}) },
			Applied:  func(r Revision) { mu.Lock(); applied = append(applied, r); mu.Unlock() },
			Rejected: func(err error) { mu.Lock(); rejected = append(rejected, err); mu.Unlock() },
		})
	}()
	defer func() { cancel(); <-done }()
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			ok := cond()
			mu.Unlock()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(200 * time.Millisecond) // the watch is set up
	write("tenants: [\n")
	wait("a load error", func() bool { return len(rejected) == 1 })
	write(good("refused"))
	wait("a refusal", func() bool { return len(rejected) == 2 })
	write(good("next"))
	wait("an applied revision", func() bool { return len(applied) == 1 })
	mu.Lock()
	defer mu.Unlock()
	if !strings.HasPrefix(rejected[0].Error(), path+":") {
		t.Errorf("load error does not name the file: %v", rejected[0])
	}
	if msg := rejected[1].Error(); !strings.HasPrefix(msg, path+": fake: tenant refused") {
		t.Errorf("refusal does not name file and component: %v", msg)
	}
	if applied[0].Seq != 2 || len(applied[0].Digest) != 64 {
		t.Errorf("applied %+v, want revision 2 with a sha256", applied[0])
	}
	if got := strings.Join(part.committed, ","); got != "next" {
		t.Errorf("committed %q, want only next", got)
	}
}
