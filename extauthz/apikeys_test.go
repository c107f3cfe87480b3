package extauthz

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/extauthz/apikey"
)

// TestAPIKeysWrittenThroughTheServer: a key Put through APIKeys is in
// force at once (no wait for the follower); a rotation another writer
// makes (the CLI: same file size, renamed into place) is followed.
func TestAPIKeysWrittenThroughTheServer(t *testing.T) {
	cfg := testConfig(t)
	cfg.Authz.APIKeysFile = filepath.Join(t.TempDir(), "apikeys.json")
	r := startServer(t, cfg)
	keys := r.srv.APIKeys()
	if keys == nil {
		t.Fatal("no APIKeys with authz.api_keys_file")
	}
	if !r.srv.HasTenant("acme") || r.srv.HasTenant("nope") {
		t.Error("HasTenant")
	}
	verify := func(secret string) error {
		_, err := r.srv.apiKeys.Verify(secret, "acme", netip.Addr{}, time.Now())
		return err
	}
	k, secret, err := apikey.New("acme", "ci", []string{"admin"}, nil, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Put(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	if err := verify(secret); err != nil {
		t.Fatalf("a key just Put: %v", err)
	}
	if got, err := keys.List(context.Background()); err != nil || len(got) != 1 || got[0].ID != k.ID {
		t.Fatalf("List: %v %v", got, err)
	}
	// Another writer rotates it (as `kailash apikey rotate` does).
	rk, rotated, _ := apikey.Rotate(k)
	if err := apikey.UpdateFile(cfg.Authz.APIKeysFile, func(f *apikey.File) error { f.Upsert(rk); return nil }); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for verify(secret) == nil || verify(rotated) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("the rotation was not followed: old %v, new %v", verify(secret), verify(rotated))
		}
		time.Sleep(20 * time.Millisecond)
	}
	used, err := keys.LastUsed(context.Background())
	if err != nil || used[k.ID].IsZero() {
		t.Errorf("LastUsed %v %v", used, err)
	}
}

// TestKeysFileWatchSameStat: a rewrite that leaves the same inode, size
// and time (two writes within one tick of the file system's clock) is a
// change while the file's time is recent; a second after it, the stat
// alone decides.
func TestKeysFileWatchSameStat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "apikeys.json")
	mtime := time.Now().Truncate(time.Second)
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	var w keysFileWatch
	if w.changed(path, mtime) {
		t.Fatal("no file is no change")
	}
	write(`{"keys":[{"id":"a","hash":"11"}]}`)
	if !w.changed(path, mtime) {
		t.Fatal("a new file is a change")
	}
	if w.changed(path, mtime) {
		t.Fatal("the same content is no change")
	}
	write(`{"keys":[{"id":"a","hash":"22"}]}`) // same size, inode and time
	if !w.changed(path, mtime.Add(100*time.Millisecond)) {
		t.Fatal("a same-stat rewrite within the tick was missed")
	}
	if w.changed(path, mtime.Add(2*time.Second)) {
		t.Fatal("unchanged, looked at later: no change")
	}
	// Settled: now only the stat is read (a same-stat rewrite this late
	// cannot happen on a real clock; here it shows the content is not read).
	write(`{"keys":[{"id":"a","hash":"33"}]}`)
	if w.changed(path, mtime.Add(3*time.Second)) {
		t.Fatal("settled: the content was compared")
	}
	if err := os.Chtimes(path, mtime.Add(5*time.Second), mtime.Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if !w.changed(path, mtime.Add(6*time.Second)) {
		t.Fatal("a new time is a change")
	}
}
