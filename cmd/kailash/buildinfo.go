package main

import "github.com/kailash-gw/kailash/internal/telemetry"

// Every server's kailash_build_info carries the binary's version (set by
// the linker before init runs).
func init() { telemetry.SetVersion(version) }
