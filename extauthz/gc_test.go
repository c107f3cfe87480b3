package extauthz

import (
	"os"
	"runtime/debug"
	"testing"
)

// TestTuneGC checks the GOGC of `kailash authz`: DefaultGCPercent when the
// environment has no GOGC, else the one in force, left as it is.
func TestTuneGC(t *testing.T) {
	old := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(old) })

	t.Setenv("GOGC", "")
	os.Unsetenv("GOGC") // restored by t.Setenv's cleanup
	if got := TuneGC(); got != DefaultGCPercent {
		t.Fatalf("GOGC unset: TuneGC() = %d, want %d", got, DefaultGCPercent)
	}
	if p := debug.SetGCPercent(100); p != DefaultGCPercent {
		t.Fatalf("GOGC unset: GC percent %d, want %d", p, DefaultGCPercent)
	}

	t.Setenv("GOGC", "150")
	debug.SetGCPercent(150) // what the runtime read from GOGC at start
	if got := TuneGC(); got != 150 {
		t.Fatalf("GOGC=150: TuneGC() = %d, want 150", got)
	}
	if p := debug.SetGCPercent(100); p != 150 {
		t.Fatalf("GOGC=150: GC percent %d, want it left at 150", p)
	}
}
