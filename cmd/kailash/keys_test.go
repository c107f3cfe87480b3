package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/workflow/store"
)

// kailash keys status / add / rotate on a runner's SQLite data directory
// with the key the runner generated there.
func TestKeysRotateCommand(t *testing.T) {
	b, err := os.ReadFile("../../examples/kailash.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	for _, d := range []string{"keys", "workflows"} {
		if err := os.Symlink(abs(t, "../../examples/"+d), filepath.Join(dir, d)); err != nil {
			t.Fatal(err)
		}
	}
	body := strings.Replace(string(b), "workflows: workflows", "workflows: workflows\n  data_dir: "+data, 1)
	p := filepath.Join(dir, "kailash.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	// The runner's store: a key generated into the data directory.
	st, err := store.OpenConfiguredStore(t.Context(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, id := range []string{"e1", "e2", "e3"} {
		if err := st.StartExecution(t.Context(), &store.ExecutionRecord{ID: id, Workflow: "w", Tenant: "acme", User: "alice",
			Input: map[string]any{"x": "secret"}, CreatedAt: time.Now().UTC().Format(time.RFC3339Nano)}); err != nil {
			t.Fatal(err)
		}
	}
	if fi, err := os.Stat(filepath.Join(data, store.GeneratedKeysFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("generated key file: %v %v", err, fi)
	}
	out, err := runOut(t, "keys", "status", "-c", p)
	if err != nil {
		t.Fatal(err)
	}
	first := regexp.MustCompile(`active key: (\S+)`).FindStringSubmatch(out)
	if first == nil || !regexp.MustCompile(regexp.QuoteMeta(first[1])+` +6\n`).MatchString(out) {
		t.Fatalf("status:\n%s", out)
	}
	out, err = runOut(t, "keys", "rotate", "-c", p, "--batch", "2")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	next := regexp.MustCompile(`new key (\S+) added`).FindStringSubmatch(out)
	if next == nil || next[1] == first[1] || !strings.Contains(out, "done: every value is under "+next[1]) || !strings.Contains(out, "rows scanned") {
		t.Fatalf("rotate:\n%s", out)
	}
	t.Logf("kailash keys rotate:\n%s", out)
	out, err = runOut(t, "keys", "status", "-c", p)
	t.Logf("kailash keys status:\n%s", out)
	if err != nil || !strings.Contains(out, "active key: "+next[1]) || !regexp.MustCompile(regexp.QuoteMeta(next[1])+` +6\n`).MatchString(out) ||
		strings.Contains(out, first[1]+"  ") {
		t.Fatalf("status after rotate: %v\n%s", err, out)
	}
	// The serving store reads on (it re-reads the keys file).
	if e, err := st.GetExecution(t.Context(), "acme", "e2"); err != nil || e.Input["x"] != "secret" {
		t.Fatalf("read after rotate: %v %+v", err, e)
	}
	// add (inactive), then rotate --to it.
	out, err = runOut(t, "keys", "add", "-c", p, "--id", "k-third")
	if err != nil || !strings.Contains(out, "added key k-third") {
		t.Fatalf("add: %v %s", err, out)
	}
	if out, err = runOut(t, "keys", "rotate", "-c", p, "--to", "k-third"); err != nil || !strings.Contains(out, "done: every value is under k-third") {
		t.Fatalf("rotate --to: %v\n%s", err, out)
	}
	if _, err := runOut(t, "keys", "rotate", "-c", p, "--to", "nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("rotate to an unknown key: %v", err)
	}
}
