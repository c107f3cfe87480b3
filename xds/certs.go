package xds

import (
	"errors"
	"fmt"
	"os"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/fswatch"
	"github.com/kailash-gw/kailash/xds/translate"
)

// ReadInputs reads the files cfg names that translation needs: every
// tenant's certificate and key. Errors name the tenant and field, never the
// contents.
func ReadInputs(cfg *config.Config) (translate.Inputs, error) {
	in := translate.Inputs{Certificates: map[string]translate.KeyPair{}, ClientCAs: map[string][]byte{}}
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
		if f := t.TLS.ClientCAFile; f != "" {
			ca, err := os.ReadFile(cfg.Path(f))
			if err != nil {
				errs = append(errs, fmt.Errorf("tenant %q: tls.client_ca_file: %w", t.ID, err))
				continue
			}
			in.ClientCAs[t.ID] = ca
		}
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
// none); the digests it returns spare newSnapshot re-encoding them.
func translateCached(cfg *config.Config, c *translate.Cache) (*translate.Resources, translate.Digests, error) {
	in, err := ReadInputs(cfg)
	if err != nil {
		return nil, nil, err
	}
	return translate.TranslateCached(cfg, in, c)
}

// certDirs are the directories holding cfg's certificate and key files,
// sorted (the ADS port's own files are added by Server.watchDirs).
func certDirs(cfg *config.Config) []string {
	var files []string
	for i := range cfg.Tenants {
		t := &cfg.Tenants[i]
		for _, f := range []string{t.TLS.CertFile, t.TLS.KeyFile, t.TLS.ClientCAFile} {
			if f != "" { // most tenants have none: 100,000 of them are not 300,000 names
				files = append(files, f)
			}
		}
	}
	return fswatch.Dirs(cfg.Path, files...)
}
