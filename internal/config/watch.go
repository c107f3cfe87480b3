package config

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/kailash-gw/kailash/internal/fswatch"
)

// Component is one part of a process that follows the config file.
//
// Prepare builds everything a revision needs that can fail (translation,
// key sources, directories, workflows) without changing what the component
// serves, and returns commit, which puts the prepared revision in force and
// cannot fail. A prepared revision that is never committed is dropped; it
// must hold nothing that needs closing. Prepare and commit are called by one
// goroutine at a time (the watcher).
type Component interface {
	Prepare(cfg *Config) (commit func(), err error)
}

// Part is a Component with the name its errors are given.
type Part struct {
	Name string
	Component
}

// Apply puts cfg in force in every part or in none: it prepares cfg in each
// part and, only if every Prepare succeeded, commits all of them. Otherwise
// no part changes and the error names every part that refused, and why.
func Apply(cfg *Config, parts ...Part) error {
	commits := make([]func(), 0, len(parts))
	var errs []error
	for _, p := range parts {
		commit, err := p.Prepare(cfg)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.Name, err))
			continue
		}
		commits = append(commits, commit)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, c := range commits {
		c()
	}
	return nil
}

// Revision identifies a config that was put in force: Seq counts from 1 (the
// config the process started with), Digest is the SHA-256 of the file.
type Revision struct {
	Seq    uint64
	Digest string
	At     time.Time
}

// Watcher is what Watch calls back.
type Watcher struct {
	// Apply puts a config that loaded and validated in force, or returns
	// why not (nothing may have changed then). Apply runs in the watcher's
	// goroutine, one call at a time.
	Apply func(*Config) error
	// Applied (optional) is told each revision Apply put in force.
	Applied func(Revision)
	// Rejected (optional) is told each revision that was not put in force:
	// the file did not load or validate, or Apply refused it.
	Rejected func(error)
}

// Watch reloads path whenever it changes (editors that write in place and
// those that rename a temporary file over it are both seen, because the
// directory is watched) and hands each config that loads and validates to
// w.Apply. A file that fails to load, or that Apply refuses, is logged once
// (naming the file and the problem) and passed to w.Rejected: the last good
// config keeps serving everywhere. Watch returns when ctx is cancelled.
func Watch(ctx context.Context, path string, log *slog.Logger, w Watcher) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	fw, err := fswatch.New(fswatch.Options{
		Debounce: 100 * time.Millisecond,
		Files:    []string{abs},
		OnError: func(err error) {
			log.Warn("config watch error", "file", path, "err", err)
		},
	})
	if err != nil {
		return err
	}
	defer fw.Close()
	if err := fw.Follow([]string{filepath.Dir(abs)}); err != nil {
		return err
	}
	seq := uint64(1) // the config the process started with
	reject := func(err error) {
		log.Error("config rejected; the last good config keeps serving everywhere", "file", path, "revision", seq, "err", err)
		if w.Rejected != nil {
			w.Rejected(err)
		}
	}
	fw.Run(ctx, func() {
		b, err := os.ReadFile(path)
		if err != nil {
			reject(err)
			return
		}
		cfg, err := Parse(path, b)
		if err != nil {
			reject(err)
			return
		}
		if err := w.Apply(cfg); err != nil {
			reject(fmt.Errorf("%s: %w", path, err))
			return
		}
		seq++
		sum := sha256.Sum256(b)
		rev := Revision{Seq: seq, Digest: hex.EncodeToString(sum[:]), At: time.Now()}
		log.Info("config applied", "file", path, "revision", rev.Seq, "sha256", rev.Digest[:12], "tenants", len(cfg.Tenants))
		if w.Applied != nil {
			w.Applied(rev)
		}
	})
	return nil
}
