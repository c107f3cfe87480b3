package config

import (
	"context"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watch reloads path whenever it changes (editors that write in place and
// those that rename a temporary file over it are both seen, because the
// directory is watched) and calls apply with each config that loads and
// validates. A config that fails is passed to reject and never to apply: the
// last good one keeps serving. Watch returns when ctx is cancelled.
func Watch(ctx context.Context, path string, log *slog.Logger, apply func(*Config), reject func(error)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if err := w.Add(filepath.Dir(abs)); err != nil {
		return err
	}
	const debounce = 100 * time.Millisecond
	var timer *time.Timer
	fire := make(chan struct{}, 1)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if filepath.Clean(ev.Name) != abs || ev.Op == fsnotify.Chmod {
				continue
			}
			if timer == nil {
				timer = time.AfterFunc(debounce, func() {
					select {
					case fire <- struct{}{}:
					default:
					}
				})
			} else {
				timer.Reset(debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			log.Warn("config watch error", "file", path, "err", err)
		case <-fire:
			cfg, err := Load(path)
			if err != nil {
				log.Error("config rejected; last good config keeps serving", "file", path, "err", err)
				if reject != nil {
					reject(err)
				}
				continue
			}
			log.Info("config reloaded", "file", path, "tenants", len(cfg.Tenants))
			apply(cfg)
		}
	}
}
