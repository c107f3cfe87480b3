package wire

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestLeaf keeps the package a leaf: every part of kailash imports it, so
// an import here could make a cycle or drag a dependency into all of them.
func TestLeaf(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		n++
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			t.Errorf("%s imports %s: internal/wire must import nothing", f, imp.Path.Value)
		}
	}
	if n == 0 {
		t.Fatal("no source files found")
	}
}
