package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/policies"
)

// policyCommands are `kailash policy`'s subcommands.
func policyCommands() []command {
	return []command{
		{"test", "run the _test.rego tests of bundles and files with OPA's tester (as opa test), with coverage", policyTest},
		{"check", "parse, compile and lint bundles and files (as opa check); errors name file:row:col", policyCheck},
		{"eval", "evaluate the decision for an input, and explain it", policyEval},
		{"build", "write the bundle as an OPA bundle tarball, optionally signed", policyBuild},
		{"replay", "re-evaluate a decision log with a candidate bundle; print what would change", policyReplay},
		{"diff", "replay a decision log against the active and a candidate bundle; the CI gate before a bundle ships", policyDiff},
	}
}

// runPolicy is `kailash policy test|check|eval|build|replay|diff`.
func runPolicy(ctx context.Context, args []string, w io.Writer) error {
	if len(args) == 0 || isHelp(args[0]) {
		policyUsage(w)
		if len(args) == 0 {
			return errors.New("policy: a command is required")
		}
		return nil
	}
	for _, c := range policyCommands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], w)
		}
	}
	policyUsage(os.Stderr)
	return fmt.Errorf("policy: unknown command %q", args[0])
}

func policyUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: kailash policy <command> [flags] [path ...]")
	fmt.Fprintln(w)
	for _, c := range policyCommands() {
		fmt.Fprintf(w, "  %-7s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'kailash policy <command> --help' for a command's flags.")
}

// isHelp says a lone argument asks for the usage.
func isHelp(a string) bool {
	return a == "-h" || a == "--help" || a == "-help" || a == "help"
}

// parseArgs parses flags anywhere among the positional arguments, as OPA's
// commands do (`policy test dir -v` is `policy test -v dir`; Go's flag
// package alone stops at the first non-flag), and returns the positional
// ones. "--" ends the flags: everything after it is positional.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// noArgs refuses positional arguments a command does not take.
func noArgs(cmd string, pos []string) error {
	if len(pos) > 0 {
		return fmt.Errorf("%s: unexpected argument %q (see --help)", cmd, pos[0])
	}
	return nil
}

func bundleFlag(fs *flagSetT, p *string) {
	fs.StringVar(p, "bundle", "", "bundle directory, .rego file or .tar.gz (default: the bundle shipped in the binary)")
}

// bundlesFlag is --bundle for the commands that take several paths, and
// -b, opa test's and opa check's bundle mode, which is kailash's only mode.
func bundlesFlag(fs *flagSetT, p *stringsFlag) {
	fs.Var(p, "bundle", "bundle directory, .tar.gz, .rego or data file; repeatable, same as a path argument (default: the bundle shipped in the binary)")
	fs.Bool("b", false, "accepted as opa's bundle mode, which is how kailash always reads directories and tarballs")
}

// printSources names what was loaded, so a run can never be mistaken for
// one over another bundle.
func printSources(w io.Writer, verb string, sources []policies.Source) {
	for _, s := range sources {
		name := s.Path
		if name == "bundle" {
			name = "the bundle embedded in kailash"
		}
		if s.Revision == "" {
			fmt.Fprintf(w, "%s %s (data)\n", verb, name)
			continue
		}
		fmt.Fprintf(w, "%s %s (revision %s)\n", verb, name, s.Revision)
	}
}

const policyTestHelp = `Run the test_ rules of the given bundles and files together with OPA's tester,
as 'opa test' does. A directory or .tar.gz is read as a bundle (as the servers
load it), a .rego file as one module, a .json or .yaml file as data at the
root. Without a path, the bundle embedded in kailash is tested. Flags may come
before or after the paths.

Exit status, as opa test: 0 when every test passes, 2 when a test fails,
errors or is skipped (todo_), or coverage is below --threshold, 1 for any
other error (a path that does not exist, a module that does not compile).`

func policyTest(ctx context.Context, args []string, w io.Writer) error {
	fs := newFlagSetUsage("policy test", "[flags] [path ...]", policyTestHelp, w)
	var bundles stringsFlag
	var coverage, verbose, failOnEmpty, skipZero bool
	var threshold float64
	var opts policies.TestOptions
	format := "pretty"
	bundlesFlag(fs, &bundles)
	fs.BoolVar(&coverage, "coverage", false, "report line coverage of the modules (as opa test, test files count too)")
	fs.BoolVar(&coverage, "c", false, "same as --coverage")
	fs.Float64Var(&threshold, "threshold", 0, "exit 2 when coverage is below this percentage (0-100; implies --coverage)")
	fs.BoolVar(&verbose, "v", false, "list every test, with the notes and failed expressions of its trace")
	fs.BoolVar(&verbose, "verbose", false, "same as -v")
	fs.StringVar(&format, "format", format, "output format: pretty or json (OPA's JSON: the results, or the coverage report with --coverage)")
	fs.StringVar(&format, "f", format, "same as --format")
	fs.StringVar(&opts.Run, "run", "", "run only the tests whose name (data.pkg.test_x) matches this regular expression")
	fs.StringVar(&opts.Run, "r", "", "same as --run")
	fs.BoolVar(&opts.VarValues, "var-values", false, "show the failing expression and its local variables' values")
	fs.DurationVar(&opts.Timeout, "timeout", 5*time.Second, "time limit of each test")
	fs.BoolVar(&failOnEmpty, "fail-on-empty", false, "exit 1 when no test ran")
	fs.BoolVar(&skipZero, "exit-zero-on-skipped", false, "skipped (todo_) tests do not make the exit status 2")
	fs.BoolVar(&skipZero, "z", false, "same as --exit-zero-on-skipped")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	paths := append([]string(bundles), pos...)
	if format != "pretty" && format != "json" {
		return fmt.Errorf("policy test: --format %q: want pretty or json", format)
	}
	if threshold < 0 || threshold > 100 {
		return fmt.Errorf("policy test: --threshold %v: want a percentage between 0 and 100", threshold)
	}
	coverage = coverage || threshold > 0
	opts.Coverage, opts.Trace = coverage, verbose
	run, err := policies.Test(ctx, paths, opts)
	if err != nil {
		return err
	}
	// In JSON, stdout is OPA's document alone; what was tested goes to stderr.
	info := w
	if format == "json" {
		info = os.Stderr
	}
	printSources(info, "testing", run.Sources)
	failed := 0
	for _, r := range run.Results {
		if !r.Pass() && !(r.Skip && skipZero) {
			failed++
		}
	}
	var reporter tester.Reporter
	switch {
	case format == "json" && coverage:
		reporter = tester.JSONCoverageReporter{Cover: run.Cover, Modules: run.Modules, Output: w, Threshold: threshold, Verbose: verbose}
	case format == "json":
		reporter = tester.JSONReporter{Output: w}
	default:
		reporter = tester.PrettyReporter{Output: w, Verbose: verbose, FailureLine: opts.VarValues, LocalVars: opts.VarValues}
	}
	ch := make(chan *tester.Result, len(run.Results))
	for _, r := range run.Results {
		ch <- r
	}
	close(ch)
	repErr := reporter.Report(ch)
	var below error
	if coverage {
		rep := run.Cover.Report(run.Modules)
		if rep.Coverage < threshold {
			below = fmt.Errorf("policy test: coverage %.1f%% is below the threshold %.1f%%", rep.Coverage, threshold)
		}
		if format == "pretty" {
			writeCoverage(w, &rep)
		}
	}
	switch {
	case failed > 0:
		return &exitError{2, fmt.Errorf("policy test: %d of %d tests did not pass", failed, len(run.Results))}
	case below != nil:
		return &exitError{2, below}
	case repErr != nil:
		return repErr
	case len(run.Results) == 0 && failOnEmpty:
		return errors.New("policy test: no tests were run")
	}
	return nil
}

// writeCoverage prints a coverage report for people: the total, then each
// file with the lines no test evaluated.
func writeCoverage(w io.Writer, rep *cover.Report) {
	fmt.Fprintf(w, "coverage %.1f%%\n", rep.Coverage)
	files := make([]string, 0, len(rep.Files))
	for f := range rep.Files {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, f := range files {
		fr := rep.Files[f]
		var missed []string
		for _, r := range fr.NotCovered {
			// OPA's supplementary coverage runs repeat a range with its kind.
			if m := fmt.Sprintf("%d-%d", r.Start.Row, r.End.Row); len(missed) == 0 || missed[len(missed)-1] != m {
				missed = append(missed, m)
			}
		}
		line := fmt.Sprintf("  %s %.1f%%", f, fr.Coverage)
		if len(missed) > 0 {
			line += " (not covered: lines " + strings.Join(missed, ", ") + ")"
		}
		fmt.Fprintln(w, line)
	}
}

const policyCheckHelp = `Parse and compile the given bundles and files together, tests included, as
'opa check' does; errors name file:row:col with OPA's details (the source line
and a caret, have/want for type errors). Lint findings (OPA's strict mode) are
printed; with --strict they are errors. Without a path, the bundle embedded in
kailash is checked. Flags may come before or after the paths. Exit status 1
on any error.`

func policyCheck(_ context.Context, args []string, w io.Writer) error {
	fs := newFlagSetUsage("policy check", "[flags] [path ...]", policyCheckHelp, w)
	var bundles stringsFlag
	var decision string
	var strict bool
	bundlesFlag(fs, &bundles)
	fs.StringVar(&decision, "decision", "", "also check this decision is defined, e.g. envoy/authz/allow")
	fs.BoolVar(&strict, "strict", false, "treat lint findings (OPA's strict mode) as errors")
	fs.BoolVar(&strict, "S", false, "same as --strict")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	sources, lint, err := policies.Check(append([]string(bundles), pos...), decision)
	if err != nil {
		return err
	}
	printSources(w, "checked", sources)
	for _, l := range lint {
		fmt.Fprintln(w, "lint:", l)
	}
	if strict && len(lint) > 0 {
		return fmt.Errorf("policy check --strict: %d lint findings:\n%s", len(lint), strings.Join(lint, "\n"))
	}
	_, err = fmt.Fprintf(w, "ok: compiles (%d lint findings)\n", len(lint))
	return err
}

func policyEval(ctx context.Context, args []string, w io.Writer) error {
	fs := newFlagSetUsage("policy eval", "--input FILE [flags]", "Evaluate the decision for an input with the bundle, and explain it: the value of every rule of\nthe decision's package for this input, optionally OPA's trace.", w)
	var dir, decision, inputPath, explain string
	var checkRequest bool
	bundleFlag(fs, &dir)
	fs.StringVar(&decision, "decision", policies.DefaultDecision, "decision path")
	fs.StringVar(&inputPath, "input", "", `JSON file ("-": stdin): the policy input (or, with --check-request, an Envoy CheckRequest)`)
	fs.BoolVar(&checkRequest, "check-request", false, "the input file is a CheckRequest (protojson); build the input as drop-in mode does")
	fs.StringVar(&explain, "explain", "rules", "rules (each rule's value), fails, notes or full (adds OPA's trace)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("policy eval", pos); err != nil {
		return err
	}
	if inputPath == "" {
		return errors.New("policy eval: --input is required")
	}
	b, err := readInput(inputPath)
	if err != nil {
		return err
	}
	var input any
	if checkRequest {
		var req authv3.CheckRequest
		if err := protojson.Unmarshal(b, &req); err != nil {
			return fmt.Errorf("%s: %w", inputPath, err)
		}
		v, err := envoyauth.BuildInputWith(&req, nil, nil, envoyauth.InputOptions{DropIn: true})
		if err != nil {
			return err
		}
		if input, err = ast.JSON(v); err != nil {
			return err
		}
	} else if err := util.UnmarshalJSON(b, &input); err != nil {
		return fmt.Errorf("%s: %w", inputPath, err)
	}
	ex, err := policies.Explain(ctx, dir, decision, input, explain)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "decision %s (bundle revision %s)\n", ex.Decision, ex.Revision)
	if ex.Err != nil {
		fmt.Fprintf(w, "result: %v — Envoy would answer 503 (fail closed)\n", ex.Err)
	} else {
		out, _ := json.MarshalIndent(ex.Result, "", "  ")
		verdict := "DENY"
		if ok, err := policies.Allowed(ex.Result); err != nil {
			verdict = "INVALID (" + err.Error() + ") — Envoy would answer 503"
		} else if ok {
			verdict = "ALLOW"
		}
		fmt.Fprintf(w, "result: %s\n%s\n", verdict, out)
	}
	fmt.Fprintln(w, "\nwhy — the rules of the decision's package for this input:")
	names := make([]string, 0, len(ex.Rules))
	for n := range ex.Rules {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		v, _ := json.Marshal(ex.Rules[n])
		fmt.Fprintf(w, "  %s = %s\n", n, v)
	}
	if len(ex.Undefined) > 0 {
		fmt.Fprintf(w, "  undefined (no rule body matched): %s\n", strings.Join(ex.Undefined, ", "))
	}
	if ex.Trace != "" {
		fmt.Fprintf(w, "\ntrace (%s):\n%s", explain, ex.Trace)
	}
	return nil
}

func policyBuild(_ context.Context, args []string, w io.Writer) error {
	fs := newFlagSetUsage("policy build", "--bundle DIR [flags]", "Compile the bundle and write it as an OPA bundle tarball, optionally signed in OPA's format.", w)
	var dir, out, keyFile string
	var opts policies.BuildOptions
	fs.StringVar(&dir, "bundle", "", "bundle directory (required)")
	fs.StringVar(&out, "o", "bundle.tar.gz", "output file")
	fs.StringVar(&opts.Revision, "revision", "", "manifest revision")
	fs.StringVar(&keyFile, "signing-key", "", "PEM private key: sign the bundle in OPA's format (.signatures.json)")
	fs.StringVar(&opts.SigningAlg, "signing-alg", "RS256", "signing algorithm")
	fs.StringVar(&opts.KeyID, "key-id", "default", "signing key id")
	fs.BoolVar(&opts.IncludeTests, "include-tests", false, "keep _test.rego files in the bundle")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if dir == "" && len(pos) == 1 {
		dir, pos = pos[0], nil
	}
	if err := noArgs("policy build", pos); err != nil {
		return err
	}
	if dir == "" {
		return errors.New("policy build: --bundle is required")
	}
	if keyFile != "" {
		k, err := os.ReadFile(keyFile)
		if err != nil {
			return err
		}
		opts.SigningKey = string(k)
	}
	b, err := policies.Build(dir, opts)
	if err != nil {
		return err
	}
	if err := os.WriteFile(out, b, 0o644); err != nil {
		return err
	}
	signed := "unsigned"
	if keyFile != "" {
		signed = "signed with key " + opts.KeyID
	}
	_, err = fmt.Fprintf(w, "wrote %s (%d bytes, %s)\n", out, len(b), signed)
	return err
}

func policyReplay(ctx context.Context, args []string, w io.Writer) error {
	fs := newFlagSetUsage("policy replay", "--log FILE --bundle DIR [flags]", "Re-evaluate the inputs of a decision log with a candidate bundle and report the decisions\nwhose outcome would change, per tenant and request path, with examples.", w)
	var logPath, dir, decision string
	var examples int
	fs.StringVar(&logPath, "log", "", "decision log (JSON lines) to replay (required)")
	fs.StringVar(&dir, "bundle", "", "candidate bundle (required)")
	fs.StringVar(&decision, "decision", "", "decision path (default: the one each line names, else kailash/authz/result)")
	fs.IntVar(&examples, "examples", 3, "examples printed per tenant and path")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("policy replay", pos); err != nil {
		return err
	}
	if logPath == "" || dir == "" {
		return errors.New("policy replay: --log and --bundle are required")
	}
	f, err := os.Open(logPath)
	if err != nil {
		return err
	}
	defer f.Close()
	if decision == "" {
		decision = firstDecisionPath(logPath)
	}
	eng, err := policies.NewEngine(ctx, policies.EngineOptions{Dir: dir, Decision: decision})
	if err != nil {
		return err
	}
	rep, err := policies.Replay(ctx, eng, f, examples)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "candidate %s (revision %s), decision %s\n", dir, eng.Revision(), eng.Decision())
	policies.WriteReplayReport(w, rep)
	return nil
}

const policyDiffHelp = `Re-evaluate the input of every line of a decision log (as kailash writes it:
--decision-log, or the policy.decision_logs sinks) with the active bundle and
with the candidate, and report the decisions whose outcome (allow, deny,
error) differs, per tenant and request path, with examples. Lines without
input (requests refused before the policy ran) are skipped; masked input
fields stay absent. With --fail-on-change the exit status is 2 when any
decision changes: the gate a policy author puts in CI before a bundle ships.`

func policyDiff(ctx context.Context, args []string, w io.Writer) error {
	fs := newFlagSetUsage("policy diff", "--active DIR --candidate DIR --log FILE [flags]", policyDiffHelp, w)
	var active, candidate, logPath, decision string
	var examples int
	var failOnChange bool
	fs.StringVar(&active, "active", "", "the bundle in production: directory, .rego file or .tar.gz (required)")
	fs.StringVar(&candidate, "candidate", "", "the bundle about to ship: directory, .rego file or .tar.gz (required)")
	fs.StringVar(&logPath, "log", "", "decision log (JSON lines) whose inputs are replayed (required)")
	fs.StringVar(&decision, "decision", "", "decision path (default: the one the log's first line names, else kailash/authz/result)")
	fs.IntVar(&examples, "examples", 3, "examples printed per tenant and path")
	fs.BoolVar(&failOnChange, "fail-on-change", false, "exit 2 when any decision changes")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("policy diff", pos); err != nil {
		return err
	}
	if active == "" || candidate == "" || logPath == "" {
		return errors.New("policy diff: --active, --candidate and --log are required")
	}
	f, err := os.Open(logPath)
	if err != nil {
		return fmt.Errorf("policy diff: %w", err)
	}
	defer f.Close()
	if decision == "" {
		decision = firstDecisionPath(logPath)
	}
	act, err := policies.NewEngine(ctx, policies.EngineOptions{Dir: active, Decision: decision})
	if err != nil {
		return fmt.Errorf("policy diff: --active: %w", err)
	}
	cand, err := policies.NewEngine(ctx, policies.EngineOptions{Dir: candidate, Decision: decision})
	if err != nil {
		return fmt.Errorf("policy diff: --candidate: %w", err)
	}
	rep, err := policies.Diff(ctx, act, cand, f, examples)
	if err != nil {
		return fmt.Errorf("policy diff: %s: %w", logPath, err)
	}
	fmt.Fprintf(w, "active %s (revision %s), candidate %s (revision %s), decision %s\n", active, act.Revision(), candidate, cand.Revision(), act.Decision())
	policies.WriteReplayReport(w, rep)
	if failOnChange && rep.Changed > 0 {
		return &exitError{2, fmt.Errorf("policy diff: %d of %d decisions would change", rep.Changed, rep.Total)}
	}
	return nil
}

// firstDecisionPath is the "path" of the log's first event ("" if none).
func firstDecisionPath(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(b), "\n")
	var ev struct {
		Path string `json:"path"`
	}
	_ = json.Unmarshal([]byte(line), &ev)
	return ev.Path
}

// readInput reads a file, or stdin for "-".
func readInput(p string) ([]byte, error) {
	if p == "-" {
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			return nil, fmt.Errorf("--input -: %w", err)
		}
		return b, nil
	}
	return os.ReadFile(p)
}
