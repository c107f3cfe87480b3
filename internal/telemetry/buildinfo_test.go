package telemetry

import (
	"runtime"
	"testing"
)

// Every registry carries kailash_build_info = 1 with the version set
// before it was made, the Go version and a revision label.
func TestBuildInfoOnEveryRegistry(t *testing.T) {
	SetVersion("v9.9.9-test")
	t.Cleanup(func() { SetVersion("dev") })
	mfs, err := NewRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "kailash_build_info" {
			continue
		}
		if len(mf.GetMetric()) != 1 {
			t.Fatalf("kailash_build_info has %d series; want 1", len(mf.GetMetric()))
		}
		m := mf.GetMetric()[0]
		if m.GetGauge().GetValue() != 1 {
			t.Fatalf("kailash_build_info = %v; want 1", m.GetGauge().GetValue())
		}
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["version"] != "v9.9.9-test" || labels["goversion"] != runtime.Version() || labels["revision"] == "" {
			t.Fatalf("kailash_build_info labels = %v; want version v9.9.9-test, goversion %s, a revision", labels, runtime.Version())
		}
		return
	}
	t.Fatal("kailash_build_info missing from NewRegistry()")
}
