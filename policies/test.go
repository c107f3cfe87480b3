package policies

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/lineage"
	"github.com/open-policy-agent/opa/v1/util"
)

// RunTests runs every test_ rule of the bundle in dir ("" = the embedded
// bundle) with OPA's tester, like `opa test`. The error is for a bundle that
// does not load or compile; failing tests are results with Fail or Error set.
func RunTests(ctx context.Context, dir string) ([]*tester.Result, error) {
	run, err := Test(ctx, []string{dir}, TestOptions{})
	if err != nil {
		return nil, err
	}
	return run.Results, nil
}

// RunTestsWithCoverage is RunTests that also measures which lines of the
// bundle's (non-test) modules the tests evaluated.
func RunTestsWithCoverage(ctx context.Context, dir string) ([]*tester.Result, *cover.Report, error) {
	run, err := Test(ctx, []string{dir}, TestOptions{Coverage: true})
	if err != nil {
		return nil, nil, err
	}
	rep := run.Cover.Report(run.Modules)
	return run.Results, &rep, nil
}

// TestOptions are the options of `opa test` that Test supports.
type TestOptions struct {
	// Run, when set, is a regular expression: only the tests whose
	// package-qualified name matches run (`opa test --run`).
	Run string
	// VarValues makes failing tests report the failing expression and
	// the values of its local variables (`opa test --var-values`).
	VarValues bool
	// Trace keeps OPA's trace (notes and failed expressions, as
	// `opa test -v` shows them) on each result.
	Trace bool
	// Coverage measures which lines of the policy modules the tests
	// evaluated.
	Coverage bool
	// Timeout bounds each test (default 5s, as `opa test`).
	Timeout time.Duration
}

// Source is one path that was loaded: as given (or "bundle", the one
// embedded in the binary) and the revision of its bundle (the manifest's
// revision, else a hash of the content; "" for a data file).
type Source struct {
	Path     string `json:"path"`
	Revision string `json:"revision,omitempty"`
}

// TestRun is the outcome of Test.
type TestRun struct {
	Sources []Source
	Results []*tester.Result
	// Modules are the policy modules (tests excluded): what Cover measures.
	Modules map[string]*ast.Module
	// Cover is set when TestOptions.Coverage is.
	Cover *cover.Cover
}

// Test runs the test_ rules of the bundles, policy files, test files and
// data files at paths (none: the embedded bundle) together, with OPA's
// tester, the way `opa test path...` does. Each directory or tarball is
// read as a bundle (data.json files land at their directory's path, as the
// servers load it); a .rego file is one module; a .json or .yaml file is
// data at the root. The error is for paths that do not load or compile;
// failing tests are results with Fail or Error set.
func Test(ctx context.Context, paths []string, opts TestOptions) (*TestRun, error) {
	f, sources, err := loadSources(paths)
	if err != nil {
		return nil, err
	}
	mods := make(map[string]*ast.Module, len(f.modules)+len(f.tests))
	maps.Copy(mods, f.modules)
	maps.Copy(mods, f.tests)
	store := inmem.NewFromObjectWithOpts(f.data, inmem.OptRoundTripOnWrite(false))
	txn, err := store.NewTransaction(ctx, storage.TransactionParams{})
	if err != nil {
		return nil, err
	}
	defer store.Abort(ctx, txn)
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	runner := tester.NewRunner().
		SetCompiler(ast.NewCompiler().
			WithDefaultRegoVersion(ast.RegoV1).
			WithEnablePrintStatements(true).
			WithUseTypeCheckAnnotations(true).
			WithRewriteTestRules(opts.VarValues)).
		SetDefaultRegoVersion(ast.RegoV1).
		SetStore(store).
		SetModules(mods).
		CapturePrintOutput(true).
		EnableTracing(opts.Trace || opts.VarValues).
		StackTraces(true).
		SetTimeout(timeout).
		Filter(opts.Run)
	run := &TestRun{Sources: sources, Modules: f.modules}
	if opts.Coverage {
		run.Cover = cover.New()
		runner = runner.SetCoverageQueryTracer(run.Cover)
	}
	ch, err := runner.RunTests(ctx, txn)
	if err != nil {
		return nil, locate(err, "")
	}
	for r := range ch {
		// As `opa test`: -v shows the notes and failed expressions;
		// --var-values alone, the failed ones.
		if opts.Trace {
			r.Trace = lineage.Filter(r.Trace, func(e *topdown.Event) bool {
				return e.Op == topdown.NoteOp || e.Op == topdown.FailOp
			})
		} else {
			r.Trace = lineage.Fails(r.Trace)
		}
		run.Results = append(run.Results, r)
	}
	return run, nil
}

// loadSources reads each path (see Test) and merges them into one set of
// modules and one data document. No path is the embedded bundle.
func loadSources(paths []string) (*files, []Source, error) {
	if len(paths) == 0 {
		paths = []string{""}
	}
	if len(paths) == 1 && !isDataFile(paths[0]) {
		f, err := loadAny(paths[0], nil)
		if err != nil {
			return nil, nil, err
		}
		return f, []Source{{Path: bundleName(paths[0]), Revision: f.revision}}, nil
	}
	out := &files{modules: map[string]*ast.Module{}, tests: map[string]*ast.Module{}, data: map[string]any{}}
	var sources []Source
	for _, p := range paths {
		if isDataFile(p) {
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, nil, fmt.Errorf("policy data %s: %w", p, err)
			}
			var doc map[string]any
			if err := util.Unmarshal(b, &doc); err != nil {
				return nil, nil, fmt.Errorf("policy data %s: %w", p, err)
			}
			if err := mergeData(out.data, doc, p, ""); err != nil {
				return nil, nil, err
			}
			sources = append(sources, Source{Path: p})
			continue
		}
		f, err := loadAny(p, nil)
		if err != nil {
			return nil, nil, err
		}
		maps.Copy(out.modules, f.modules)
		maps.Copy(out.tests, f.tests)
		if err := mergeData(out.data, f.data, bundleName(p), ""); err != nil {
			return nil, nil, err
		}
		sources = append(sources, Source{Path: bundleName(p), Revision: f.revision})
	}
	return out, sources, nil
}

// isDataFile says p names a JSON or YAML data file (not a bundle).
func isDataFile(p string) bool {
	switch strings.ToLower(filepath.Ext(p)) {
	case ".json", ".yaml", ".yml":
		return true
	}
	return false
}

// mergeData merges src into dst; two paths defining the same non-object
// value is an error naming the document path.
func mergeData(dst, src map[string]any, from, at string) error {
	for k, v := range src {
		cur, ok := dst[k]
		if !ok {
			dst[k] = v
			continue
		}
		cm, ok1 := cur.(map[string]any)
		vm, ok2 := v.(map[string]any)
		if !ok1 || !ok2 {
			return fmt.Errorf("policy data %s: data%s.%s is also defined by an earlier path", from, at, k)
		}
		if err := mergeData(cm, vm, from, at+"."+k); err != nil {
			return err
		}
	}
	return nil
}
