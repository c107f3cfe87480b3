package main

import (
	"io"
	"strings"

	"github.com/kailash-gw/kailash/extauthz/ratelimit"
	"github.com/kailash-gw/kailash/internal/config"
)

// wantsRLSConfig reports whether `kailash translate` was asked for the
// envoyproxy/ratelimit config (--ratelimit-config, -ratelimit-config).
func wantsRLSConfig(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if n := strings.TrimLeft(a, "-"); n != a && (n == "ratelimit-config" || n == "ratelimit-config=true") {
			return true
		}
	}
	return false
}

// runTranslateRLS is `kailash translate --ratelimit-config -c FILE`: the
// tenants' quotas as one envoyproxy/ratelimit config file on stdout.
func runTranslateRLS(args []string, w io.Writer) error {
	fs := newFlagSet("translate")
	var path string
	var rls bool
	fs.StringVar(&path, "c", "kailash.yaml", "config file")
	fs.StringVar(&path, "config", "kailash.yaml", "config file (same as -c)")
	fs.BoolVar(&rls, "ratelimit-config", false, "print the tenants' quotas as an envoyproxy/ratelimit config file instead of the Envoy resources")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	b, err := ratelimit.EmitRLSConfig(cfg)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
