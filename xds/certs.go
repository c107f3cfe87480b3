package xds

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/xds/translate"
)

// certDebounce collects the events of one certificate rotation (cert and
// key written one after the other, or a directory of symlinks swapped) into
// one reload.
const certDebounce = 100 * time.Millisecond

// ReadInputs reads the files cfg names that translation needs: every
// tenant's certificate and key. Errors name the tenant and field, never the
// contents.
func ReadInputs(cfg *config.Config) (translate.Inputs, error) {
	in := translate.Inputs{Certificates: map[string]translate.KeyPair{}}
	var errs []error
	for i := range cfg.Tenants {
		t := &cfg.Tenants[i]
		if !t.TLS.Enabled() || t.TLS.CertFile == "" || t.TLS.KeyFile == "" {
			continue // translation reports the missing field
		}
		cert, err := os.ReadFile(cfg.Path(t.TLS.CertFile))
		if err != nil {
			errs = append(errs, fmt.Errorf("tenant %q: tls.cert_file: %w", t.ID, err))
			continue
		}
		key, err := os.ReadFile(cfg.Path(t.TLS.KeyFile))
		if err != nil {
			errs = append(errs, fmt.Errorf("tenant %q: tls.key_file: %w", t.ID, err))
			continue
		}
		in.Certificates[t.ID] = translate.KeyPair{CertPEM: cert, KeyPEM: key}
	}
	return in, errors.Join(errs...)
}

// Translate reads the files cfg names and translates it: what the control
// plane publishes, for `kailash translate` and `kailash validate`.
func Translate(cfg *config.Config) (*translate.Resources, error) {
	res, _, err := translateCached(cfg, nil)
	return res, err
}

// translateCached is Translate reusing c's unchanged per-tenant pieces (nil:
// none); the digests it returns spare resourceVersions re-encoding them.
func translateCached(cfg *config.Config, c *translate.Cache) (*translate.Resources, translate.Digests, error) {
	in, err := ReadInputs(cfg)
	if err != nil {
		return nil, nil, err
	}
	return translate.TranslateCached(cfg, in, c)
}

// certDirs are the directories holding cfg's certificate and key files,
// sorted. Directories are watched rather than files, so that a file
// replaced by rename (or a Kubernetes secret's symlink swap) is still seen.
func certDirs(cfg *config.Config) []string {
	var dirs []string
	for i := range cfg.Tenants {
		t := &cfg.Tenants[i]
		for _, f := range []string{t.TLS.CertFile, t.TLS.KeyFile} {
			if f == "" {
				continue
			}
			if abs, err := filepath.Abs(cfg.Path(f)); err == nil {
				dirs = append(dirs, filepath.Dir(abs))
			}
		}
	}
	slices.Sort(dirs)
	return slices.Compact(dirs)
}

// certWatcher follows the directories of the current config's certificates.
type certWatcher struct {
	w *fsnotify.Watcher

	mu   sync.Mutex      // guards dirs
	dirs map[string]bool // directories being watched
}

func newCertWatcher() (*certWatcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	return &certWatcher{w: w, dirs: map[string]bool{}}, nil
}

// follow makes the watched set exactly dirs.
func (c *certWatcher) follow(dirs []string) error {
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

// run calls reload, debounced, after any change in a watched directory,
// until ctx ends. Changes to unrelated files there cost a re-read that
// publishes nothing (the resources hash the same).
func (c *certWatcher) run(ctx context.Context, reload func()) {
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
			timer.Reset(certDebounce)
		case _, ok := <-c.w.Errors:
			if !ok {
				return
			}
			timer.Reset(certDebounce) // events may be lost: re-read
		case <-timer.C:
			reload()
		}
	}
}

func (c *certWatcher) close() error { return c.w.Close() }
