package policies

import (
	"context"
	"errors"
	"path/filepath"
	"time"

	"github.com/kailash-gw/kailash/internal/fswatch"
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
	// A bundle file is watched through its directory, so replacing it by
	// rename (as deploy tools do) is seen; a directory with its subtree.
	o := fswatch.Options{Debounce: debounce, Tree: true, OnError: func(error) {}}
	dir := e.dir
	if kind == sourceTarball || kind == sourceRegoFile {
		file := filepath.Clean(e.dir)
		o = fswatch.Options{Debounce: debounce, Files: []string{file}, OnError: func(error) {}}
		dir = filepath.Dir(file)
	}
	w, err := fswatch.New(o)
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Follow([]string{dir}); err != nil {
		return err
	}
	w.Run(ctx, func() {
		err := e.Reload(ctx)
		if onReload != nil {
			onReload(err)
		}
	})
	return nil
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
