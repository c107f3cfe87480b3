// Package certwatch follows the directories holding certificate and key
// files and calls a reload function, debounced, when anything in them
// changes. The control plane uses it for the tenants' certificates and its
// own mutual-TLS files; the authz and rate-limit servers for theirs.
//
// Directories are watched rather than files, so that a file replaced by
// rename (or a Kubernetes secret's symlink swap) is still seen.
package certwatch

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Debounce collects the events of one certificate rotation (cert and key
// written one after the other, or a directory of symlinks swapped) into one
// reload.
const Debounce = 100 * time.Millisecond

// Dirs returns the sorted, distinct absolute directories of files (empty
// names are skipped). resolve maps a configured name to a path (nil: as is).
func Dirs(resolve func(string) string, files ...string) []string {
	var dirs []string
	for _, f := range files {
		if f == "" {
			continue
		}
		if resolve != nil {
			f = resolve(f)
		}
		if abs, err := filepath.Abs(f); err == nil {
			dirs = append(dirs, filepath.Dir(abs))
		}
	}
	slices.Sort(dirs)
	return slices.Compact(dirs)
}

// Watcher follows a set of directories.
type Watcher struct {
	w *fsnotify.Watcher

	mu   sync.Mutex      // guards dirs
	dirs map[string]bool // directories being watched
}

// New makes a Watcher following nothing yet.
func New() (*Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	return &Watcher{w: w, dirs: map[string]bool{}}, nil
}

// Follow makes the watched set exactly dirs.
func (c *Watcher) Follow(dirs []string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	want := map[string]bool{}
	var errs []error
	for _, d := range dirs {
		want[d] = true
		if c.dirs[d] {
			continue
		}
		if err := c.w.Add(d); err != nil {
			errs = append(errs, fmt.Errorf("watch %s: %w", d, err))
			continue
		}
		c.dirs[d] = true
	}
	for d := range c.dirs {
		if !want[d] {
			_ = c.w.Remove(d)
			delete(c.dirs, d)
		}
	}
	return errors.Join(errs...)
}

// Run calls reload, debounced, after any change in a watched directory,
// until ctx ends. Changes to unrelated files there cost a re-read that
// changes nothing.
func (c *Watcher) Run(ctx context.Context, reload func()) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-c.w.Events:
			if !ok {
				return
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			timer.Reset(Debounce)
		case _, ok := <-c.w.Errors:
			if !ok {
				return
			}
			timer.Reset(Debounce) // events may be lost: re-read
		case <-timer.C:
			reload()
		}
	}
}

// Close stops watching; Run returns.
func (c *Watcher) Close() error { return c.w.Close() }
