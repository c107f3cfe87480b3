package policies

import (
	"context"

	"github.com/open-policy-agent/opa/v1/tester"
)

// RunTests runs every test_ rule of the bundle in dir ("" = the embedded
// bundle) with OPA's tester, like `opa test`. The error is for a bundle that
// does not load or compile; failing tests are results with Fail or Error set.
func RunTests(ctx context.Context, dir string) ([]*tester.Result, error) {
	results, _, err := runTests(ctx, dir, nil)
	return results, err
}
