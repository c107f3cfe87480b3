package policies

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watch keeps the bundle current until ctx ends: a bundle directory or file
// is reloaded on every change (debounced), a bundle server is polled every
// PollInterval. Each reload's result goes to onReload (nil on success; a
// failed reload keeps the last good version; a bundle server with nothing
// new is not reported). It returns nil when ctx ends, and at once for the
// embedded bundle.
func (e *Engine) Watch(ctx context.Context, debounce time.Duration, onReload func(error)) error {
	if e.remote != nil {
		return e.pollLoop(ctx, onReload)
	}
	if e.dir == "" {
		return nil
	}
	if debounce <= 0 {
		debounce = 100 * time.Millisecond
	}
	kind, err := kindOf(e.dir)
	if err != nil {
		return err
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
	// A bundle file is watched through its directory, so replacing it by
	// rename (as deploy tools do) is seen.
	file := ""
	if kind == sourceTarball || kind == sourceRegoFile {
		file = filepath.Clean(e.dir)
		err = w.Add(filepath.Dir(file))
	} else {
		err = addTree(e.dir)
	}
	if err != nil {
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
			if ev.Op == fsnotify.Chmod || (file != "" && filepath.Clean(ev.Name) != file) {
				continue
			}
			if file == "" && ev.Op.Has(fsnotify.Create) {
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

func (e *Engine) pollLoop(ctx context.Context, onReload func(error)) error {
	t := time.NewTicker(e.remote.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			err := e.Reload(ctx)
			if errors.Is(err, ErrNotModified) || ctx.Err() != nil {
				continue
			}
			if onReload != nil {
				onReload(err)
			}
		}
	}
}
