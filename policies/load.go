package policies

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
)

// files is a parsed bundle: modules by file name, test modules apart, the
// data document, the manifest and a content revision.
type files struct {
	modules  map[string]*ast.Module
	tests    map[string]*ast.Module
	data     map[string]any
	manifest bundle.Manifest
	// hash identifies the content (modules and data); revision is the
	// manifest's revision when it has one, else hash.
	hash     string
	revision string
}

// Verification selects how bundle signatures are checked, with OPA's own
// bundle-signing format (.signatures.json, a JWT over the file hashes).
// When set, a bundle without a valid signature is refused.
type Verification struct {
	// PublicKey is the PEM public key (or the HMAC secret for HS256).
	PublicKey string
	// KeyID names the key (the JWT's "kid"; default "default").
	KeyID string
	// Algorithm is the JWS algorithm (default RS256).
	Algorithm string
	// Scope, when set, must equal the signature's scope claim.
	Scope string
	// Exclude lists files that are not covered by the signature.
	Exclude []string
}

func (v *Verification) config() *bundle.VerificationConfig {
	if v == nil {
		return nil
	}
	id := v.KeyID
	if id == "" {
		id = "default"
	}
	alg := v.Algorithm
	if alg == "" {
		alg = "RS256"
	}
	keys := map[string]*bundle.KeyConfig{id: {Key: v.PublicKey, Algorithm: alg}}
	return bundle.NewVerificationConfig(keys, id, v.Scope, v.Exclude)
}

// sourceKind says what a bundle location is.
type sourceKind int

const (
	sourceEmbedded sourceKind = iota
	sourceDir
	sourceTarball
	sourceRegoFile
)

// kindOf classifies dir: "" is the embedded bundle, a directory is a bundle
// directory, a regular file is a bundle tarball (.tar.gz as `opa build`
// writes it).
func kindOf(dir string) (sourceKind, error) {
	if dir == "" {
		return sourceEmbedded, nil
	}
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("policy bundle %s: no such file or directory", dir)
	}
	if err != nil {
		return 0, fmt.Errorf("policy bundle: %w", err)
	}
	if st.IsDir() {
		return sourceDir, nil
	}
	if !st.Mode().IsRegular() {
		return 0, fmt.Errorf("policy bundle: %s is neither a directory nor a bundle file", dir)
	}
	if strings.HasSuffix(dir, ".rego") {
		return sourceRegoFile, nil
	}
	return sourceTarball, nil
}

// loadFiles reads and parses the bundle at dir (see kindOf) with OPA's bundle
// reader, verifying its signature when verify is set.
func loadFiles(dir string, verify *Verification) (*files, error) {
	f, err := loadAny(dir, verify)
	if err == nil && len(f.modules) == 0 {
		err = fmt.Errorf("policy bundle %s: no .rego modules", bundleName(dir))
	}
	return f, err
}

// bundleName is dir as messages name it.
func bundleName(dir string) string {
	if dir == "" {
		return "bundle"
	}
	return dir
}

// loadAny is loadFiles that accepts a bundle of tests only (one of several
// paths given to `kailash policy test`).
func loadAny(dir string, verify *Verification) (*files, error) {
	kind, err := kindOf(dir)
	if err != nil {
		return nil, err
	}
	switch kind {
	case sourceEmbedded:
		sub, err := fs.Sub(bundleFS, "bundle")
		if err != nil {
			return nil, err
		}
		loader, err := bundle.NewFSLoader(sub)
		if err != nil {
			return nil, err
		}
		return readBundle(bundle.NewCustomReader(loader), "bundle", verify)
	case sourceDir:
		loader := bundle.NewDirectoryLoader(dir).WithFilter(skipHidden(dir))
		return readBundle(bundle.NewCustomReader(loader), dir, verify)
	case sourceRegoFile: // one policy file, as `opa run policy.rego`
		root, name := filepath.Dir(dir), filepath.Base(dir)
		loader := bundle.NewDirectoryLoader(root).WithFilter(func(abspath string, info fs.FileInfo, _ int) bool {
			if info.IsDir() {
				return filepath.Clean(abspath) != filepath.Clean(filepath.ToSlash(root))
			}
			return info.Name() != name
		})
		return readBundle(bundle.NewCustomReader(loader), root, verify)
	default:
		b, err := os.ReadFile(dir)
		if err != nil {
			return nil, fmt.Errorf("policy bundle: %w", err)
		}
		return readBundle(bundle.NewReader(bytes.NewReader(b)), dir, verify)
	}
}

// parseTarball reads a bundle tarball; name prefixes its files in errors.
func parseTarball(b []byte, name string, verify *Verification) (*files, error) {
	f, err := readBundle(bundle.NewReader(bytes.NewReader(b)), name, verify)
	if err == nil && len(f.modules) == 0 {
		err = fmt.Errorf("policy bundle %s: no .rego modules", name)
	}
	return f, err
}

// skipHidden leaves out files under dot-directories (.git, editors' swap
// directories) but keeps .manifest and .signatures.json.
func skipHidden(root string) func(abspath string, info fs.FileInfo, depth int) bool {
	return func(abspath string, info fs.FileInfo, _ int) bool {
		rel, err := filepath.Rel(root, abspath)
		if err != nil || rel == "." {
			return false
		}
		parts := strings.Split(filepath.ToSlash(rel), "/")
		for i, p := range parts {
			if strings.HasPrefix(p, ".") && (i < len(parts)-1 || info.IsDir()) {
				return true
			}
		}
		if info.IsDir() {
			return false
		}
		base := path.Base(rel)
		if strings.HasPrefix(base, ".") {
			return base != ".manifest" && base != ".signatures.json"
		}
		return !strings.HasSuffix(base, ".rego") && base != "data.json" && base != "data.yaml" && base != "data.yml"
	}
}

func readBundle(r *bundle.Reader, prefix string, verify *Verification) (*files, error) {
	r = r.WithRegoVersion(ast.RegoV1).WithProcessAnnotations(true)
	if vc := verify.config(); vc != nil {
		r = r.WithBundleVerificationConfig(vc)
	} else {
		r = r.WithSkipBundleVerification(true)
	}
	b, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("policy bundle %s: %w", prefix, locate(err, prefix))
	}
	out := &files{
		modules:  map[string]*ast.Module{},
		tests:    map[string]*ast.Module{},
		data:     b.Data,
		manifest: b.Manifest,
	}
	if out.data == nil {
		out.data = map[string]any{}
	}
	h := sha256.New()
	mods := append([]bundle.ModuleFile(nil), b.Modules...)
	sort.Slice(mods, func(i, j int) bool { return mods[i].Path < mods[j].Path })
	for _, m := range mods {
		fmt.Fprintf(h, "%s\x00%d\x00", m.Path, len(m.Raw))
		h.Write(m.Raw)
		name := joinName(prefix, m.Path)
		if m.Parsed == nil {
			continue
		}
		// Errors found later (compile) name the file as the user knows it.
		setFile(m.Parsed, name)
		if strings.HasSuffix(m.Path, "_test.rego") {
			out.tests[name] = m.Parsed
		} else {
			out.modules[name] = m.Parsed
		}
	}
	d, err := json.Marshal(out.data) // map keys are sorted: a stable hash
	if err != nil {
		return nil, err
	}
	h.Write(d)
	out.hash = hex.EncodeToString(h.Sum(nil))[:16]
	out.revision = out.hash
	if b.Manifest.Revision != "" {
		out.revision = b.Manifest.Revision
	}
	return out, nil
}

// joinName names a bundle file for messages: the directory or tarball
// followed by its path inside the bundle.
func joinName(prefix, p string) string {
	p = strings.TrimPrefix(p, "/")
	if prefix == "" {
		return p
	}
	if st, err := os.Stat(prefix); err == nil && st.IsDir() {
		return filepath.Join(prefix, filepath.FromSlash(p))
	}
	if prefix == "bundle" { // the embedded bundle
		return prefix + "/" + p
	}
	return prefix + ":" + p
}

// setFile rewrites the file name recorded in every location of m.
func setFile(m *ast.Module, name string) {
	ast.WalkNodes(m, func(n ast.Node) bool {
		if loc := n.Loc(); loc != nil {
			loc.File = name
		}
		return false
	})
	if m.Package != nil && m.Package.Location != nil {
		m.Package.Location.File = name
	}
}

// locate rewrites OPA's errors so each one names file:row:col. prefix is
// joined to file names that are bundle-relative (from OPA's reader). OPA's
// details follow each error's first line, tab-indented as `opa` prints
// them: the source line and a caret under the column for parse errors,
// have/want for type errors.
func locate(err error, prefix string) error {
	var errs ast.Errors
	if !errors.As(err, &errs) {
		return err
	}
	out := make([]error, 0, len(errs))
	for _, e := range errs {
		if e.Location == nil {
			out = append(out, fmt.Errorf("%s: %s%s", e.Code, e.Message, details(e)))
			continue
		}
		file := e.Location.File
		if strings.HasPrefix(file, "/") && prefix != "" {
			file = joinName(prefix, file)
		}
		out = append(out, fmt.Errorf("%s:%d:%d: %s: %s%s", file, e.Location.Row, e.Location.Col, e.Code, e.Message, details(e)))
	}
	return errors.Join(out...)
}

// details is OPA's detail lines of e, each on its own line after a tab.
func details(e *ast.Error) string {
	if e.Details == nil {
		return ""
	}
	var b strings.Builder
	for _, l := range e.Details.Lines() {
		b.WriteString("\n\t")
		b.WriteString(l)
	}
	return b.String()
}
