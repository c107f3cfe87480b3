package fswatch

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// start runs w until the test ends and counts its calls.
func start(t *testing.T, w *Watcher) *atomic.Int32 {
	t.Helper()
	var n atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { w.Run(ctx, func() { n.Add(1) }) })
	t.Cleanup(func() { cancel(); wg.Wait(); _ = w.Close() })
	return &n
}

func waitCalls(t *testing.T, n *atomic.Int32, want int32) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for n.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("calls = %d; want %d", n.Load(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// With Files, only events of those files count: a rename over the file
// does, a write to its neighbour does not.
func TestFilesFilterAndRenameOver(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "kailash.yaml")
	write(t, f, "a")
	w, err := New(Options{Debounce: 50 * time.Millisecond, Files: []string{f}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Follow([]string{dir}); err != nil {
		t.Fatal(err)
	}
	n := start(t, w)
	write(t, filepath.Join(dir, "other"), "x")
	time.Sleep(300 * time.Millisecond)
	if got := n.Load(); got != 0 {
		t.Fatalf("a neighbour's write made %d calls; want 0", got)
	}
	tmp := filepath.Join(dir, ".kailash.yaml.tmp")
	write(t, tmp, "b")
	if err := os.Rename(tmp, f); err != nil {
		t.Fatal(err)
	}
	waitCalls(t, n, 1)
}

// A burst of writes is one call after the debounce.
func TestDebounceCollectsBurst(t *testing.T) {
	dir := t.TempDir()
	w, err := New(Options{Debounce: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Follow([]string{dir}); err != nil {
		t.Fatal(err)
	}
	n := start(t, w)
	for i := range 5 {
		write(t, filepath.Join(dir, "cert.pem"), string(rune('a'+i)))
		time.Sleep(20 * time.Millisecond)
	}
	waitCalls(t, n, 1)
	time.Sleep(1500 * time.Millisecond)
	if got := n.Load(); got != 1 {
		t.Fatalf("a burst of 5 writes made %d calls; want 1", got)
	}
}

// With Tree, subdirectories are followed, hidden ones are not, and one
// created later is followed once it appears.
func TestTreeFollowsNewSubdirectories(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"a", ".git"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	w, err := New(Options{Debounce: 50 * time.Millisecond, Tree: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Follow([]string{root}); err != nil {
		t.Fatal(err)
	}
	n := start(t, w)
	write(t, filepath.Join(root, ".git", "HEAD"), "x")
	time.Sleep(300 * time.Millisecond)
	if got := n.Load(); got != 0 {
		t.Fatalf("a write in a hidden directory made %d calls; want 0", got)
	}
	write(t, filepath.Join(root, "a", "p.rego"), "package p")
	waitCalls(t, n, 1)
	if err := os.Mkdir(filepath.Join(root, "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	waitCalls(t, n, 2) // the directory's creation
	write(t, filepath.Join(root, "b", "q.rego"), "package q")
	waitCalls(t, n, 3)
}

// Follow makes the set exact: a directory no longer listed is dropped.
func TestFollowDropsDirectories(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	w, err := New(Options{Debounce: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Follow([]string{a, b}); err != nil {
		t.Fatal(err)
	}
	if err := w.Follow([]string{b}); err != nil {
		t.Fatal(err)
	}
	n := start(t, w)
	write(t, filepath.Join(a, "x"), "x")
	time.Sleep(300 * time.Millisecond)
	if got := n.Load(); got != 0 {
		t.Fatalf("a write in a dropped directory made %d calls; want 0", got)
	}
	write(t, filepath.Join(b, "x"), "x")
	waitCalls(t, n, 1)
}
