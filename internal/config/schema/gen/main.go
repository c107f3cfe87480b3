// Command gen writes internal/config/schema/docs_gen.go,
// examples/kailash.schema.json and docs/configuration.md from internal/config's types and doc comments.
// Run it with `go generate ./internal/config/schema` from the repository.
package main

import (
	"log"
	"os"
	"path/filepath"

	"github.com/kailash-gw/kailash/internal/config/schema"
)

func main() {
	// go generate runs in the package's directory: internal/config/schema.
	root := filepath.Join("..", "..", "..")
	docs, err := schema.ExtractDocs(filepath.Join(root, "internal", "config"))
	if err != nil {
		log.Fatal(err)
	}
	schema.Docs = docs
	if err := os.WriteFile("docs_gen.go", schema.DocsGo(docs), 0o644); err != nil {
		log.Fatal(err)
	}
	js, err := schema.JSON()
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "examples", "kailash.schema.json"), js, 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "docs", "configuration.md"), schema.Markdown(), 0o644); err != nil {
		log.Fatal(err)
	}
}
