package extauthz

import (
	"os"
	"runtime/debug"
)

// DefaultGCPercent is the GOGC of a `kailash authz` process whose
// environment does not set GOGC. A Check allocates ~15 KB (most of it in
// OPA's evaluation) while the live heap of an authz server is small (the
// compiled bundle, the caches), so at Go's default of 100 the collector
// runs dozens of times a second under load, takes a core's quarter each
// time and makes requests assist it: the p99 latency follows the GC cycle.
// At 400 it runs four to five times less often for a heap that peaks at
// five times the live one (tens of MB). GOMEMLIMIT, when set, still caps
// the heap: the collector then runs as often as the limit needs.
const DefaultGCPercent = 400

// TuneGC sets the garbage collector's target to DefaultGCPercent unless
// GOGC is set in the environment, and returns the GOGC in force (-1 for
// off). It is for the authz server's own process; a program embedding the
// server keeps its own settings.
func TuneGC() int {
	if _, set := os.LookupEnv("GOGC"); set {
		p := debug.SetGCPercent(100)
		debug.SetGCPercent(p)
		return p
	}
	debug.SetGCPercent(DefaultGCPercent)
	return DefaultGCPercent
}
