package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/policies"
)

// runPolicy is `kailash policy test|check|eval|build|replay`.
func runPolicy(ctx context.Context, args []string, w io.Writer) error {
	subs := map[string]func(context.Context, []string, io.Writer) error{
		"test": policyTest, "check": policyCheck, "eval": policyEval, "build": policyBuild, "replay": policyReplay,
	}
	if len(args) == 0 || subs[args[0]] == nil {
		fmt.Fprintln(w, "Usage: kailash policy <command> [flags]")
		fmt.Fprintln(w, "  test    run the bundle's _test.rego tests (OPA's tester), with coverage")
		fmt.Fprintln(w, "  check   compile and lint the bundle; errors name file:row:col")
		fmt.Fprintln(w, "  eval    evaluate the decision for an input, and explain it")
		fmt.Fprintln(w, "  build   write the bundle as an OPA bundle tarball, optionally signed")
		fmt.Fprintln(w, "  replay  re-evaluate a decision log with a candidate bundle; print what would change")
		if len(args) == 0 {
			return errors.New("policy: a command is required")
		}
		return fmt.Errorf("policy: unknown command %q", args[0])
	}
	return subs[args[0]](ctx, args[1:], w)
}

func bundleFlag(fs *flagSetT, p *string) {
	fs.StringVar(p, "bundle", "", "bundle directory, .rego file or .tar.gz (default: the bundle shipped in the binary)")
}

func policyTest(ctx context.Context, args []string, w io.Writer) error {
	fs := newFlagSet("policy test")
	var dir string
	var coverage, verbose bool
	var threshold float64
	bundleFlag(fs, &dir)
	fs.BoolVar(&coverage, "coverage", false, "report line coverage of the policy modules")
	fs.Float64Var(&threshold, "threshold", 0, "fail when coverage is below this percentage")
	fs.BoolVar(&verbose, "v", false, "list every test")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 1 && dir == "" {
		dir = fs.Arg(0)
	}
	results, rep, err := policies.RunTestsWithCoverage(ctx, dir)
	if err != nil {
		return err
	}
	failed := 0
	for _, r := range results {
		switch {
		case r.Error != nil:
			failed++
			fmt.Fprintf(w, "ERROR %s.%s (%s): %v\n", r.Package, r.Name, r.Location, r.Error)
		case r.Fail:
			failed++
			fmt.Fprintf(w, "FAIL  %s.%s (%s)\n%s", r.Package, r.Name, r.Location, r.Output)
		case verbose:
			fmt.Fprintf(w, "PASS  %s.%s (%s)\n", r.Package, r.Name, r.Duration)
		}
	}
	fmt.Fprintf(w, "%d/%d tests passed\n", len(results)-failed, len(results))
	if coverage || threshold > 0 {
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
				missed = append(missed, fmt.Sprintf("%d-%d", r.Start.Row, r.End.Row))
			}
			line := fmt.Sprintf("  %s %.1f%%", f, fr.Coverage)
			if len(missed) > 0 {
				line += " (not covered: lines " + strings.Join(missed, ", ") + ")"
			}
			fmt.Fprintln(w, line)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d policy tests failed", failed)
	}
	if threshold > 0 && rep.Coverage < threshold {
		return fmt.Errorf("coverage %.1f%% is below %.1f%%", rep.Coverage, threshold)
	}
	return nil
}

func policyCheck(_ context.Context, args []string, w io.Writer) error {
	fs := newFlagSet("policy check")
	var dir, decision string
	var strict bool
	bundleFlag(fs, &dir)
	fs.StringVar(&decision, "decision", "", "also check this decision is defined, e.g. envoy/authz/allow")
	fs.BoolVar(&strict, "strict", false, "treat lint findings as errors")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 1 && dir == "" {
		dir = fs.Arg(0)
	}
	rev, lint, err := policies.Check(dir, decision)
	if err != nil {
		return err
	}
	for _, l := range lint {
		fmt.Fprintln(w, "lint:", l)
	}
	if strict && len(lint) > 0 {
		return fmt.Errorf("%d lint findings", len(lint))
	}
	_, err = fmt.Fprintf(w, "ok: bundle compiles (revision %s, %d lint findings)\n", rev, len(lint))
	return err
}

func policyEval(ctx context.Context, args []string, w io.Writer) error {
	fs := newFlagSet("policy eval")
	var dir, decision, inputPath, explain string
	var checkRequest bool
	bundleFlag(fs, &dir)
	fs.StringVar(&decision, "decision", policies.DefaultDecision, "decision path")
	fs.StringVar(&inputPath, "input", "", "JSON file: the policy input (or, with --check-request, an Envoy CheckRequest)")
	fs.BoolVar(&checkRequest, "check-request", false, "the input file is a CheckRequest (protojson); build the input as drop-in mode does")
	fs.StringVar(&explain, "explain", "rules", "rules (each rule's value), fails, notes or full (adds OPA's trace)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if inputPath == "" {
		return errors.New("policy eval: --input is required")
	}
	b, err := os.ReadFile(inputPath)
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
	fs := newFlagSet("policy build")
	var dir, out, keyFile string
	var opts policies.BuildOptions
	fs.StringVar(&dir, "bundle", "", "bundle directory (required)")
	fs.StringVar(&out, "o", "bundle.tar.gz", "output file")
	fs.StringVar(&opts.Revision, "revision", "", "manifest revision")
	fs.StringVar(&keyFile, "signing-key", "", "PEM private key: sign the bundle in OPA's format (.signatures.json)")
	fs.StringVar(&opts.SigningAlg, "signing-alg", "RS256", "signing algorithm")
	fs.StringVar(&opts.KeyID, "key-id", "default", "signing key id")
	fs.BoolVar(&opts.IncludeTests, "include-tests", false, "keep _test.rego files in the bundle")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if dir == "" && fs.NArg() == 1 {
		dir = fs.Arg(0)
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
	fs := newFlagSet("policy replay")
	var logPath, dir, decision string
	var examples int
	fs.StringVar(&logPath, "log", "", "decision log (JSON lines) to replay (required)")
	fs.StringVar(&dir, "bundle", "", "candidate bundle (required)")
	fs.StringVar(&decision, "decision", "", "decision path (default: the one each line names, else kailash/authz/result)")
	fs.IntVar(&examples, "examples", 3, "examples printed per tenant and path")
	if err := fs.Parse(args); err != nil {
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
