// Package fswatch follows directories and calls a function, debounced,
// when anything in them changes. It is the one user of fsnotify: the
// config file, policy bundle directories and files, and certificate and
// key files (the control plane's tenants' and its own mutual-TLS files;
// the authz and rate-limit servers' own) are all followed through it.
//
// Directories are watched rather than files, so that a file replaced by
// rename (an editor's save, a deploy tool's swap, a Kubernetes secret's
// symlink swap) is still seen.
package fswatch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce collects the events of one change (a certificate and
// its key written one after the other, a directory of symlinks swapped, an
// editor's write-and-rename) into one call.
const DefaultDebounce = 100 * time.Millisecond

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

// Options shape a Watcher.
type Options struct {
	// Debounce is how long the directories must be quiet before the call;
	// DefaultDebounce when zero.
	Debounce time.Duration
	// Files, when set, are the only paths whose events count; the others
	// in the followed directories are ignored. Compared cleaned, as given
	// (make them absolute if the directories are).
	Files []string
	// Tree follows each directory given to Follow with its subdirectories
	// (hidden ones, named ".*", are skipped), and subdirectories created
	// later as they appear.
	Tree bool
	// OnError, when set, is told of errors of the watch itself (an event
	// queue overflow). When nil, such an error counts as a change (events
	// may have been lost: re-read).
	OnError func(error)
}

// Watcher follows a set of directories.
type Watcher struct {
	w     *fsnotify.Watcher
	o     Options
	files map[string]bool // Options.Files, cleaned; nil: every event counts

	mu   sync.Mutex      // guards dirs
	dirs map[string]bool // directories being watched
}

// New makes a Watcher following nothing yet.
func New(o Options) (*Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	if o.Debounce <= 0 {
		o.Debounce = DefaultDebounce
	}
	c := &Watcher{w: w, o: o, dirs: map[string]bool{}}
	if len(o.Files) > 0 {
		c.files = map[string]bool{}
		for _, f := range o.Files {
			c.files[filepath.Clean(f)] = true
		}
	}
	return c, nil
}

// Follow makes the watched set exactly dirs (with Options.Tree, dirs and
// their subdirectories).
func (c *Watcher) Follow(dirs []string) error {
	var errs []error
	if c.o.Tree {
		var all []string
		for _, root := range dirs {
			sub, err := tree(root)
			if err != nil {
				errs = append(errs, fmt.Errorf("watch %s: %w", root, err))
			}
			all = append(all, sub...)
		}
		dirs = all
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	want := map[string]bool{}
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

// tree lists root and its subdirectories, skipping hidden ones.
func tree(root string) ([]string, error) {
	var dirs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != root && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			dirs = append(dirs, p)
		}
		return nil
	})
	return dirs, err
}

// addTree follows a directory created under a followed tree.
func (c *Watcher) addTree(root string) {
	sub, _ := tree(root) // what could be listed is followed
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range sub {
		if !c.dirs[d] && c.w.Add(d) == nil {
			c.dirs[d] = true
		}
	}
}

// Run calls changed, debounced, after any change in a watched directory
// (of Options.Files, when set), until ctx ends or the Watcher is closed.
// changed runs in Run's goroutine, one call at a time.
func (c *Watcher) Run(ctx context.Context, changed func()) {
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
			if ev.Op == fsnotify.Chmod || (c.files != nil && !c.files[filepath.Clean(ev.Name)]) {
				continue
			}
			if c.o.Tree && ev.Op.Has(fsnotify.Create) {
				if st, err := os.Stat(ev.Name); err == nil && st.IsDir() {
					c.addTree(ev.Name)
				}
			}
			timer.Reset(c.o.Debounce)
		case err, ok := <-c.w.Errors:
			if !ok {
				return
			}
			if c.o.OnError != nil {
				c.o.OnError(err)
				continue
			}
			timer.Reset(c.o.Debounce)
		case <-timer.C:
			changed()
		}
	}
}

// Close stops watching; Run returns.
func (c *Watcher) Close() error { return c.w.Close() }
