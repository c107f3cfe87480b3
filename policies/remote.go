package policies

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// ErrNotModified is Reload's answer when the bundle server has nothing new
// (304 Not Modified): the active version keeps serving.
var ErrNotModified = errors.New("policy bundle not modified")

// maxBundleBytes bounds a downloaded bundle.
const maxBundleBytes = 64 << 20

const (
	persistFile     = "bundle.tar.gz"
	persistEtagFile = "bundle.etag"
)

// remote is a bundle server. etag is guarded by Engine.mu.
type remote struct {
	url        string
	persistDir string
	interval   time.Duration
	client     *http.Client
	etag       string
}

func newRemote(opts EngineOptions) *remote {
	r := &remote{url: opts.URL, persistDir: opts.PersistDir, interval: opts.PollInterval, client: opts.HTTPClient}
	if r.interval <= 0 {
		r.interval = 30 * time.Second
	}
	if r.client == nil {
		r.client = &http.Client{Timeout: 30 * time.Second}
	}
	return r
}

// initRemote downloads the first bundle; when the server fails it loads the
// last good bundle persisted by an earlier run (verified and compiled like a
// download).
func (e *Engine) initRemote(ctx context.Context) error {
	err := e.poll(ctx)
	if err == nil {
		return nil
	}
	if e.remote.persistDir == "" {
		return fmt.Errorf("policy bundle server %s: %w (and no persist directory is configured)", e.remote.url, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	p := filepath.Join(e.remote.persistDir, persistFile)
	b, rerr := os.ReadFile(p)
	if rerr != nil {
		return fmt.Errorf("policy bundle server %s: %w (no persisted bundle: %v)", e.remote.url, err, rerr)
	}
	f, perr := parseTarball(b, p, e.verify)
	if perr != nil {
		return fmt.Errorf("policy bundle server %s: %w (persisted bundle rejected: %v)", e.remote.url, err, perr)
	}
	if ierr := e.install(ctx, f); ierr != nil {
		return fmt.Errorf("policy bundle server %s: %w (persisted bundle rejected: %v)", e.remote.url, err, ierr)
	}
	if etag, err := os.ReadFile(filepath.Join(e.remote.persistDir, persistEtagFile)); err == nil {
		e.remote.etag = string(etag)
	}
	return nil
}

// poll fetches the bundle once. A new bundle is verified, compiled, swapped
// in and persisted; any failure leaves the active version (and the persisted
// copy) as they were.
func (e *Engine) poll(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.remote
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return err
	}
	if r.etag != "" && e.cur.Load() != nil {
		req.Header.Set("If-None-Match", r.etag)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotModified:
		return ErrNotModified
	default:
		return fmt.Errorf("download: %s answered %s", r.url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBundleBytes+1))
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	if len(b) > maxBundleBytes {
		return fmt.Errorf("download: bundle larger than %d bytes", maxBundleBytes)
	}
	f, err := parseTarball(b, r.url, e.verify)
	if err != nil {
		return err
	}
	if err := e.install(ctx, f); err != nil {
		return err
	}
	r.etag = resp.Header.Get("ETag")
	if r.persistDir != "" {
		if err := persist(r.persistDir, b, r.etag); err != nil {
			return fmt.Errorf("policy bundle installed but not persisted: %w", err)
		}
	}
	return nil
}

// persist writes the bundle and its ETag atomically (write, then rename).
func persist(dir string, b []byte, etag string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	write := func(name string, data []byte) error {
		tmp, err := os.CreateTemp(dir, name+".*")
		if err != nil {
			return err
		}
		if _, err := tmp.Write(data); err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			return err
		}
		if err := tmp.Close(); err != nil {
			os.Remove(tmp.Name())
			return err
		}
		return os.Rename(tmp.Name(), filepath.Join(dir, name))
	}
	if err := write(persistFile, b); err != nil {
		return err
	}
	return write(persistEtagFile, []byte(etag))
}
