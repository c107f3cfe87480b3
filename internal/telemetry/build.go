package telemetry

import "runtime"

// BuildRevision is the VCS revision kailash_build_info reports ("unknown"
// when the build carries none).
func BuildRevision() string { return buildRevision() }

// GoVersion is the Go release the binary was built with.
func GoVersion() string { return runtime.Version() }
