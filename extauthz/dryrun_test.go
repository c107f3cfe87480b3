package extauthz

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kailash-gw/kailash/internal/devtoken"
)

// A tenant's dry_run overrides policy.dry_run both ways, and follows a
// config update: acme's denials are logged and let through, globex's are
// enforced; then policy.dry_run on with globex opting out.
func TestTenantDryRun(t *testing.T) {
	on, off := true, false
	cfg := testConfig(t)
	cfg.Tenants[0].DryRun = &on
	srv, err := New(t.Context(), cfg, Options{Now: fixedClock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	viewer := func(tenant string) string {
		return mint(t, devKey(t), claims(func(c *devtoken.Claims) { c.Tenant, c.Roles = tenant, []string{"viewer"} }))
	}
	status := func(tenant string) int {
		t.Helper()
		resp, err := srv.Check(t.Context(), checkReq(tenant, "POST", "/v1/workflows/etl/executions", viewer(tenant), nil))
		if err != nil {
			t.Fatal(err)
		}
		if d := resp.GetDeniedResponse(); d != nil {
			return int(d.GetStatus().GetCode())
		}
		return 200
	}
	if got := status("acme"); got != 200 {
		t.Errorf("acme (dry_run: true): %d, want 200", got)
	}
	if got := status("globex"); got != 403 {
		t.Errorf("globex (policy.dry_run off): %d, want 403", got)
	}
	if n := testutil.ToFloat64(srv.checks.WithLabelValues(ResultDeny, "dry_run")); n != 1 {
		t.Errorf("dry-run denials counted %v, want 1", n)
	}

	next := testConfig(t)
	next.Policy.DryRun = true
	next.Tenants[1].DryRun = &off
	if err := srv.Update(next); err != nil {
		t.Fatal(err)
	}
	if got := status("acme"); got != 200 {
		t.Errorf("acme under policy.dry_run: %d, want 200", got)
	}
	if got := status("globex"); got != 403 {
		t.Errorf("globex opted out of policy.dry_run: %d, want 403", got)
	}
}
