package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/tester"
)

// runKailash runs the kailash binary (this test binary, dispatched by
// TestMain) with args, and returns its stdout, stderr and exit status.
func runKailash(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperArgsEnv+"="+strings.Join(args, "\x1f"))
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		return o.String(), e.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), 0
}

// failingSuite is a bundle directory whose tests do not all pass: one
// passes, one fails, one errors (a complete rule with two values), one is
// a todo_ (skipped).
func failingSuite(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "policy.rego"), `package envoy.authz

default allow := false

allow if input.method == "GET"

conflict := 1 if input.x
conflict := 2 if input.x
`)
	writeFile(t, filepath.Join(dir, "policy_test.rego"), `package envoy.authz

test_get_allowed if allow with input as {"method": "GET"}

test_post_allowed_wrongly if allow with input as {"method": "POST"}

test_conflict_errors if conflict with input as {"x": true}

todo_test_later if false
`)
	return dir
}

// `kailash policy test DIR -v` (a flag after the path) tests DIR, and
// exits 2 as `opa test` does when a test fails. On the code before the
// fix, Go's flag package stopped at DIR, the embedded bundle was tested,
// and the exit status was 0.
func TestPolicyTestFlagAfterPathTestsThatPath(t *testing.T) {
	dir := failingSuite(t)
	out, errOut, code := runKailash(t, "policy", "test", dir, "-v")
	if code != 2 {
		t.Fatalf("exit %d, want 2\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{"testing " + dir + " (revision ", "data.envoy.authz.test_post_allowed_wrongly: FAIL", "data.envoy.authz.test_get_allowed: PASS"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	// The `opa test` form: the policy file and the test file as paths.
	out, errOut, code = runKailash(t, "policy", "test", filepath.Join(dir, "policy.rego"), filepath.Join(dir, "policy_test.rego"))
	if code != 2 || !strings.Contains(out, "test_post_allowed_wrongly: FAIL") {
		t.Fatalf("two files: exit %d, want 2\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	// opa test's bundle mode flag, as OPA users type it.
	if out, errOut, code = runKailash(t, "policy", "test", "-b", dir); code != 2 || !strings.Contains(out, "testing "+dir) {
		t.Fatalf("-b DIR: exit %d, want 2\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	// Only the passing test selected: exit 0.
	if out, errOut, code = runKailash(t, "policy", "test", dir, "--run", "test_get_allowed"); code != 0 || !strings.Contains(out, "PASS: 1/1") {
		t.Fatalf("--run: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	// A todo_ alone is skipped: exit 2, or 0 with -z, as opa test.
	if _, _, code = runKailash(t, "policy", "test", "-r", "todo", dir); code != 2 {
		t.Errorf("skipped test: exit %d, want 2", code)
	}
	if _, _, code = runKailash(t, "policy", "test", dir, "-r", "todo", "-z"); code != 0 {
		t.Errorf("skipped test with -z: exit %d, want 0", code)
	}
	// A path that does not exist is an error (1), named.
	missing := filepath.Join(dir, "nope")
	if _, errOut, code = runKailash(t, "policy", "test", dir, missing); code != 1 || !strings.Contains(errOut, missing+": no such file or directory") {
		t.Errorf("missing path: exit %d, stderr %q", code, errOut)
	}
	// Coverage below the threshold: 2; an impossible threshold: 1.
	if _, errOut, code = runKailash(t, "policy", "test", dir, "-r", "get", "--threshold", "99.9"); code != 2 || !strings.Contains(errOut, "below the threshold 99.9%") {
		t.Errorf("threshold: exit %d, stderr %q", code, errOut)
	}
	if _, _, code = runKailash(t, "policy", "test", dir, "--threshold", "101"); code != 1 {
		t.Errorf("threshold 101: exit %d, want 1", code)
	}
	// A flag that does not exist, after the path: refused, not ignored.
	if _, _, code = runKailash(t, "policy", "test", dir, "--bogus"); code != 1 {
		t.Errorf("unknown flag: exit %d, want 1", code)
	}
}

// verdict is how a test ended, as `opa test` counts it.
func verdict(r *tester.Result) string {
	switch {
	case r.Skip:
		return "skip"
	case r.Error != nil:
		return "error"
	case r.Fail:
		return "fail"
	}
	return "pass"
}

// The same suite through OPA's tester API directly (as `opa test DIR`
// loads and runs it) and through `kailash policy test --format json`
// gives the same verdict for every test, and the JSON is OPA's result
// array.
func TestPolicyTestVerdictsMatchOPATester(t *testing.T) {
	dir := failingSuite(t)
	writeFile(t, filepath.Join(dir, "more_test.rego"), `package envoy.authz_test

import data.envoy.authz

test_not_allowed if not authz.allow with input as {"method": "DELETE"}

test_print_then_fail if {
	print("seen")
	authz.allow with input as {"method": "PUT"}
}
`)
	mods, store, err := tester.LoadWithParserOptions([]string{dir}, nil, ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	txn := storage.NewTransactionOrDie(ctx, store)
	defer store.Abort(ctx, txn)
	ch, err := tester.NewRunner().SetCompiler(ast.NewCompiler().WithEnablePrintStatements(true)).SetStore(store).
		SetModules(mods).CapturePrintOutput(true).RunTests(ctx, txn)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for r := range ch {
		want[r.Package+"."+r.Name] = verdict(r)
	}
	if len(want) != 6 {
		t.Fatalf("OPA ran %d tests, want 6: %v", len(want), want)
	}

	out, errOut, code := runKailash(t, "policy", "test", "--format", "json", dir)
	if code != 2 {
		t.Fatalf("exit %d, want 2\n%s\n%s", code, out, errOut)
	}
	var results []*tester.Result
	if err := json.Unmarshal([]byte(out), &results); err != nil {
		t.Fatalf("--format json is not OPA's result array: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, r := range results {
		got[r.Package+"."+r.Name] = verdict(r)
		if r.Location == nil || r.Location.File == "" {
			t.Errorf("%s: no location", r.Name)
		}
	}
	keys := func(m map[string]string) []string {
		var k []string
		for n, v := range m {
			k = append(k, n+"="+v)
		}
		sort.Strings(k)
		return k
	}
	if g, w := keys(got), keys(want); strings.Join(g, " ") != strings.Join(w, " ") {
		t.Fatalf("verdicts differ\nkailash: %v\nopa:     %v", g, w)
	}
	for _, v := range []string{"pass", "fail", "error", "skip"} {
		if !strings.Contains(strings.Join(keys(want), " "), "="+v) {
			t.Errorf("the suite has no %s verdict: the comparison proves less than it claims", v)
		}
	}
	if !strings.Contains(errOut, "testing "+dir) {
		t.Errorf("what was tested is not on stderr in JSON mode: %q", errOut)
	}
}

// --var-values shows the failing expression and its local variables, as
// opa test --var-values does.
func TestPolicyTestVarValues(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.rego"), "package p\n\ndouble(x) := x * 2\n")
	writeFile(t, filepath.Join(dir, "p_test.rego"), "package p\n\ntest_double if {\n\tn := 3\n\tdouble(n) == 7\n}\n")
	out, _, code := runKailash(t, "policy", "test", dir, "--var-values")
	if code != 2 || !strings.Contains(out, "p_test.rego:5:") || !strings.Contains(out, "double(n) == 7") || !strings.Contains(out, "|      3") {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

// `kailash policy check a b --strict` checks a and b, strictly: a strict
// mode finding in b fails it. Before the fix, the embedded bundle was
// checked without --strict and the command succeeded.
func TestPolicyCheckPathsThenStrict(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(a, "a.rego"), "package a\n\nallow if input.ok\n")
	writeFile(t, filepath.Join(b, "b.rego"), "package b\n\nimport data.a.nothing\n\nallow if {\n\tx := 1\n\tinput.ok\n}\n")
	out, err := runOut(t, "policy", "check", a, b)
	if err != nil || !strings.Contains(out, "checked "+a) || !strings.Contains(out, "checked "+b) || !strings.Contains(out, filepath.Join(b, "b.rego")+":6:2") {
		t.Fatalf("without --strict: %v\n%s", err, out)
	}
	_, err = runOut(t, "policy", "check", a, b, "--strict")
	if err == nil || !strings.Contains(err.Error(), "lint findings") || !strings.Contains(err.Error(), filepath.Join(b, "b.rego")+":3:1") {
		t.Fatalf("--strict after the paths: want the strict findings of %s as an error, got %v", b, err)
	}
	if _, _, code := runKailash(t, "policy", "check", a, b, "--strict"); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
}

// Arguments a command does not take are refused, not ignored.
func TestPolicyUnexpectedArguments(t *testing.T) {
	dir := failingSuite(t)
	in := writeFile(t, filepath.Join(t.TempDir(), "in.json"), `{"method": "GET"}`)
	for _, args := range [][]string{
		{"policy", "eval", "--bundle", dir, "--input", in, "extra"},
		{"policy", "replay", "--log", in, "--bundle", dir, "extra"},
		{"policy", "build", dir, "other"},
		{"version", "extra"},
	} {
		if _, err := runOut(t, args...); err == nil || !strings.Contains(err.Error(), "unexpected argument") {
			t.Errorf("%v: want an unexpected argument error, got %v", args, err)
		}
	}
}

// Rego errors keep OPA's details: the source line and a caret under the
// column for a parse error, have/want for a type error.
func TestPolicyErrorsKeepOPADetails(t *testing.T) {
	parse := t.TempDir()
	writeFile(t, filepath.Join(parse, "p.rego"), "package x\n\nallow if {\n\tinput.a ==\n}\n")
	_, err := runOut(t, "policy", "check", parse)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(parse, "p.rego")+":5:1: rego_parse_error: unexpected } token\n\t}\n\t^") {
		t.Fatalf("parse error without OPA's detail lines: %v", err)
	}
	typ := t.TempDir()
	writeFile(t, filepath.Join(typ, "p.rego"), "package x\n\nallow if {\n\tcount(1) > 0\n}\n")
	_, err = runOut(t, "policy", "test", typ)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(typ, "p.rego")+":4:2: rego_type_error: count: invalid argument(s)\n\thave: (number, ???)\n\twant: (collection: any<") {
		t.Fatalf("type error without have/want: %v", err)
	}
}
