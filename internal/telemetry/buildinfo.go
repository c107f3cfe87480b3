package telemetry

import (
	"runtime"
	"runtime/debug"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// version is what kailash_build_info reports as its version label; the
// binary sets it once at start (SetVersion), "dev" until then.
var version atomic.Value

func init() { version.Store("dev") }

// SetVersion sets the version every registry made from now on reports in
// kailash_build_info (the binary's -X main.version).
func SetVersion(v string) {
	if v != "" {
		version.Store(v)
	}
}

// Version is the version set by SetVersion ("dev" when none was).
func Version() string { return version.Load().(string) }

// buildRevision is the VCS revision the binary was built from (with
// "-dirty" for a modified tree), "unknown" when the build carries none
// (go test binaries, builds outside a checkout).
func buildRevision() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "unknown"
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}

// newBuildInfo is kailash_build_info: always 1, its labels say what runs.
func newBuildInfo() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kailash_build_info",
		Help: "Always 1; the labels name the running build: version, revision (VCS commit), goversion.",
		ConstLabels: prometheus.Labels{
			"version":   Version(),
			"revision":  buildRevision(),
			"goversion": runtime.Version(),
		},
	}, func() float64 { return 1 })
}
