package policies

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watch hot-reloads a bundle directory: every change to a file under it
// (debounced) triggers Reload, whose result is passed to onReload (nil on
// success; a failed reload keeps the last good version). It returns nil when
// ctx ends, and at once for the embedded bundle.
func (e *Engine) Watch(ctx context.Context, debounce time.Duration, onReload func(error)) error {
	if e.dir == "" {
		return nil
	}
	if debounce <= 0 {
		debounce = 100 * time.Millisecond
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	addTree := func(root string) error {
		return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if p != root && strings.HasPrefix(d.Name(), ".") {
					return filepath.SkipDir
				}
				return w.Add(p)
			}
			return nil
		})
	}
	if err := addTree(e.dir); err != nil {
		return err
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			if ev.Op.Has(fsnotify.Create) {
				if st, err := os.Stat(ev.Name); err == nil && st.IsDir() {
					_ = addTree(ev.Name)
				}
			}
			timer.Reset(debounce)
		case _, ok := <-w.Errors:
			if !ok {
				return nil
			}
		case <-timer.C:
			err := e.Reload(ctx)
			if onReload != nil {
				onReload(err)
			}
		}
	}
}
