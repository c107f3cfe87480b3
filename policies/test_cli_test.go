package policies

import (
	"path/filepath"
	"strings"
	"testing"
)

// The engine's errors, like the CLI's, keep OPA's details: the source line
// and a caret for a parse error, have/want for a type error. locate used to
// keep only the first line.
func TestErrorsKeepOPADetails(t *testing.T) {
	parse := t.TempDir()
	write(t, parse, "envoy/authz/p.rego", "package envoy.authz\n\nallow if {\n\tinput.a ==\n}\n")
	_, err := NewEngine(t.Context(), EngineOptions{Dir: parse, Decision: "envoy/authz/allow"})
	want := filepath.Join(parse, "envoy/authz/p.rego") + ":5:1: rego_parse_error: unexpected } token\n\t}\n\t^"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("parse error: got %v\nwant it to contain %q", err, want)
	}
	typ := t.TempDir()
	write(t, typ, "envoy/authz/p.rego", "package envoy.authz\n\nallow if {\n\tupper(1) == \"A\"\n}\n")
	_, err = NewEngine(t.Context(), EngineOptions{Dir: typ, Decision: "envoy/authz/allow"})
	want = filepath.Join(typ, "envoy/authz/p.rego") + ":4:2: rego_type_error: upper: invalid argument(s)\n\thave: (number, ???)\n\twant: (x: string, y: string)"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("type error: got %v\nwant it to contain %q", err, want)
	}
}

// Several paths are tested together as one set of modules and one data
// document, as `opa test a b` does; each is named with its revision.
func TestTestSeveralPaths(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "pol/p.rego", "package p\n\nallow if data.limits.max > 3\n")
	write(t, dir, "tests/p_test.rego", "package p\n\ntest_allow if allow\n")
	write(t, dir, "data.json", `{"limits": {"max": 5}}`)
	run, err := Test(t.Context(), []string{filepath.Join(dir, "pol"), filepath.Join(dir, "tests", "p_test.rego"), filepath.Join(dir, "data.json")}, TestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Results) != 1 || !run.Results[0].Pass() {
		t.Fatalf("results: %v", run.Results)
	}
	if len(run.Sources) != 3 || run.Sources[0].Revision == "" || run.Sources[2].Revision != "" {
		t.Fatalf("sources: %+v", run.Sources)
	}
	// The same key from two data files is refused, not silently merged.
	write(t, dir, "other.json", `{"limits": {"max": 1}}`)
	_, err = Test(t.Context(), []string{filepath.Join(dir, "pol"), filepath.Join(dir, "data.json"), filepath.Join(dir, "other.json")}, TestOptions{})
	if err == nil || !strings.Contains(err.Error(), "data.limits.max is also defined") {
		t.Fatalf("conflicting data: %v", err)
	}
	// A path that does not exist is named.
	_, err = Test(t.Context(), []string{filepath.Join(dir, "pol"), filepath.Join(dir, "gone")}, TestOptions{})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "gone")+": no such file or directory") {
		t.Fatalf("missing path: %v", err)
	}
	// --run selects by name.
	run, err = Test(t.Context(), []string{filepath.Join(dir, "pol"), filepath.Join(dir, "tests")}, TestOptions{Run: "nomatch"})
	if err != nil || len(run.Results) != 0 {
		t.Fatalf("--run nomatch: %v %v", err, run)
	}
}
