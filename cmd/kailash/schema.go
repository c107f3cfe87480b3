package main

import (
	"context"
	"fmt"
	"io"

	"github.com/kailash-gw/kailash/internal/config/schema"
)

// runSchema prints the JSON Schema of kailash.yaml (for editors, through
// yaml-language-server) or, with --markdown, docs/configuration.md.
func runSchema(_ context.Context, args []string, w io.Writer) error {
	fs := newFlagSetUsage("schema", "[--markdown]",
		"Print the JSON Schema of kailash.yaml, generated from the config's Go types.\n"+
			"Save it and put `# yaml-language-server: $schema=kailash.schema.json` on your\n"+
			"config's first line for completion and checks in your editor.", w)
	markdown := fs.Bool("markdown", false, "print the reference page (docs/configuration.md) instead")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("schema: unexpected argument %q", fs.Arg(0))
	}
	if *markdown {
		_, err := w.Write(schema.Markdown())
		return err
	}
	b, err := schema.JSON()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
