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
)

// files is a parsed bundle: modules by file name, test modules apart, the
// merged data document and a content revision.
type files struct {
	modules  map[string]*ast.Module
	tests    map[string]*ast.Module
	data     map[string]any
	revision string
}

// source returns the bundle file system and the prefix used to name its
// files in errors: the embedded bundle when dir is "", else the directory.
func source(dir string) (fs.FS, string, error) {
	if dir == "" {
		sub, err := fs.Sub(bundleFS, "bundle")
		if err != nil {
			return nil, "", err
		}
		return sub, "bundle", nil
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, "", fmt.Errorf("policy bundle: %w", err)
	}
	if !st.IsDir() {
		return nil, "", fmt.Errorf("policy bundle: %s is not a directory", dir)
	}
	return os.DirFS(dir), dir, nil
}

// loadFiles reads and parses every .rego and data.json file of the bundle.
// Every problem is reported, each as file:row:col.
func loadFiles(dir string) (*files, error) {
	fsys, prefix, err := source(dir)
	if err != nil {
		return nil, err
	}
	out := &files{
		modules: map[string]*ast.Module{},
		tests:   map[string]*ast.Module{},
		data:    map[string]any{},
	}
	var names []string
	err = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != "." && strings.HasPrefix(d.Name(), ".") {
				return fs.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(p, ".rego") || path.Base(p) == "data.json" {
			names = append(names, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("policy bundle %s: %w", prefix, err)
	}
	sort.Strings(names)
	h := sha256.New()
	var errs []error
	for _, p := range names {
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(h, "%s\x00%d\x00", p, len(b))
		h.Write(b)
		name := filepath.Join(prefix, filepath.FromSlash(p))
		if path.Base(p) == "data.json" {
			if err := mergeData(out.data, path.Dir(p), name, b); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		m, err := ast.ParseModuleWithOpts(name, string(b), ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			errs = append(errs, locate(err))
			continue
		}
		if m == nil {
			errs = append(errs, fmt.Errorf("%s:1:1: empty module", name))
			continue
		}
		if strings.HasSuffix(p, "_test.rego") {
			out.tests[name] = m
		} else {
			out.modules[name] = m
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(out.modules) == 0 {
		return nil, fmt.Errorf("policy bundle %s: no .rego modules", prefix)
	}
	out.revision = hex.EncodeToString(h.Sum(nil))[:16]
	return out, nil
}

// mergeData mounts a data.json document at the path of its directory.
func mergeData(root map[string]any, dir, name string, b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	node := root
	if dir != "." {
		for _, seg := range strings.Split(dir, "/") {
			next, ok := node[seg].(map[string]any)
			if !ok {
				if _, exists := node[seg]; exists {
					return fmt.Errorf("%s: data path %s conflicts with another document", name, dir)
				}
				next = map[string]any{}
				node[seg] = next
			}
			node = next
		}
	}
	for k, v := range doc {
		if _, exists := node[k]; exists {
			return fmt.Errorf("%s: key %q is defined twice", name, k)
		}
		node[k] = v
	}
	return nil
}

// locate rewrites OPA's errors so each one names file:row:col.
func locate(err error) error {
	var errs ast.Errors
	if !errors.As(err, &errs) {
		return err
	}
	out := make([]error, 0, len(errs))
	for _, e := range errs {
		if e.Location == nil {
			out = append(out, fmt.Errorf("%s: %s", e.Code, e.Message))
			continue
		}
		out = append(out, fmt.Errorf("%s:%d:%d: %s: %s", e.Location.File, e.Location.Row, e.Location.Col, e.Code, e.Message))
	}
	return errors.Join(out...)
}
