package main

import (
	"io"

	"github.com/kailash-gw/kailash/xds"
	"github.com/kailash-gw/kailash/xds/translate"
)

// cutExtAuthzOnly removes `--ext-authz-only` (or -ext-authz-only) from
// translate's arguments, reporting whether it was there.
func cutExtAuthzOnly(args []string) ([]string, bool) {
	rest := make([]string, 0, len(args))
	found := false
	for _, a := range args {
		if a == "--ext-authz-only" || a == "-ext-authz-only" || a == "--ext-authz-only=true" {
			found = true
			continue
		}
		rest = append(rest, a)
	}
	return rest, found
}

// runTranslateExtAuthzOnly prints the ext_authz filter, the kailash_authz
// cluster and the tenants' virtual hosts (with their context_extensions
// tenant) for an Envoy the user runs with a static config
// (docs/integrations.md).
func runTranslateExtAuthzOnly(args []string, w io.Writer) error {
	cfg, err := configFlag("translate", args)
	if err != nil {
		return err
	}
	in, err := xds.ReadInputs(cfg)
	if err != nil {
		return err
	}
	y, err := translate.ExtAuthzOnly(cfg, in)
	if err != nil {
		return err
	}
	_, err = w.Write(y)
	return err
}
