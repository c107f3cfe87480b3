package policies

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
)

// BuildOptions shape a bundle tarball written by Build.
type BuildOptions struct {
	// Revision is written to the manifest (kept from the directory's
	// .manifest when empty).
	Revision string
	// SigningKey is a PEM private key (or HMAC secret); when set the bundle
	// is signed in OPA's format (.signatures.json). SigningAlg defaults to
	// RS256, KeyID to "default".
	SigningKey string
	SigningAlg string
	KeyID      string
	// IncludeTests keeps *_test.rego files in the bundle.
	IncludeTests bool
}

// Build compiles the bundle directory dir (so a broken policy is never
// packaged) and returns it as a bundle tarball in OPA's format — the same
// format `opa build` writes, so either tool may build what the other serves.
func Build(dir string, opts BuildOptions) ([]byte, error) {
	kind, err := kindOf(dir)
	if err != nil {
		return nil, err
	}
	if kind != sourceDir {
		return nil, fmt.Errorf("policy build: %s is not a directory", dir)
	}
	f, err := loadFiles(dir, nil)
	if err != nil {
		return nil, err
	}
	if _, err := compile(f); err != nil {
		return nil, err
	}
	b, err := bundle.NewCustomReader(bundle.NewDirectoryLoader(dir).WithFilter(skipHidden(dir))).
		WithRegoVersion(ast.RegoV1).WithSkipBundleVerification(true).Read()
	if err != nil {
		return nil, locate(err, dir)
	}
	if !opts.IncludeTests {
		kept := b.Modules[:0]
		for _, m := range b.Modules {
			if !strings.HasSuffix(m.Path, "_test.rego") {
				kept = append(kept, m)
			}
		}
		b.Modules = kept
	}
	for i := range b.Modules { // paths inside the tarball, not on this disk
		b.Modules[i].URL = b.Modules[i].Path
	}
	if opts.Revision != "" {
		b.Manifest.Revision = opts.Revision
	}
	b.Manifest.Init()
	b.Signatures = bundle.SignaturesConfig{}
	if opts.SigningKey != "" {
		keyID := opts.KeyID
		if keyID == "" {
			keyID = "default"
		}
		sc := bundle.NewSigningConfig(opts.SigningKey, opts.SigningAlg, "")
		if err := b.GenerateSignature(sc, keyID, true); err != nil {
			return nil, fmt.Errorf("policy build: sign: %w", err)
		}
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).UseModulePath(true).Write(b); err != nil {
		return nil, fmt.Errorf("policy build: %w", err)
	}
	return buf.Bytes(), nil
}
