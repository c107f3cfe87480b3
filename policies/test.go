package policies

import (
	"context"
	"maps"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// RunTests runs every test_ rule of the bundle in dir ("" = the embedded
// bundle) with OPA's tester, like `opa test`. The error is for a bundle that
// does not load or compile; failing tests are results with Fail or Error set.
func RunTests(ctx context.Context, dir string) ([]*tester.Result, error) {
	f, err := loadFiles(dir)
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
	ch, err := tester.NewRunner().
		SetCompiler(ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1).WithEnablePrintStatements(true)).
		SetDefaultRegoVersion(ast.RegoV1).
		SetStore(store).
		SetModules(mods).
		CapturePrintOutput(true).
		RunTests(ctx, txn)
	if err != nil {
		return nil, locate(err)
	}
	var out []*tester.Result
	for r := range ch {
		out = append(out, r)
	}
	return out, nil
}
