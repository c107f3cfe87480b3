// Package policies embeds the shipped Rego bundle and exposes the OPA engine
// that evaluates it. Both extauthz (per Check) and the workflow runner's
// permission_check node use the engine, so it lives here and not in extauthz.
//
// A bundle is a directory tree of .rego modules (RegoV1 syntax), *_test.rego
// tests and optional data.json documents; a data.json in directory a/b is
// mounted at data.a.b. The engine compiles the non-test modules once per
// version, prepares the decision query once, and swaps the prepared query
// atomically on Reload, so evaluation never sees a half-loaded bundle and a
// bundle that fails to compile never replaces the last good one.
package policies

import "embed"

// bundleFS holds the shipped bundle under "bundle/".
//
//go:embed bundle
var bundleFS embed.FS
