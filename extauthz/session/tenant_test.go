package session

import (
	"context"
	"testing"

	"github.com/kailash-gw/kailash/internal/testenv"
)

// RefreshFor and LogoutFor refuse another tenant's tokens without
// rotating, spending or revoking anything: the rightful tenant's client
// keeps refreshing and its session stays live. A spent token presented to
// another tenant does not revoke the session either.
func TestRefreshAndLogoutBoundToTenant(t *testing.T) {
	testenv.MemoryAndRedis(t, func(t *testing.T) {
		f := newFixture(t, Config{}, KeyRingConfig{})
		ctx := context.Background()
		t1 := f.issue(t, alice) // of acme
		_, err := f.m.RefreshFor(ctx, t1.RefreshToken, "globex")
		wantErr(t, err, ErrWrongTenant)
		wantErr(t, f.m.LogoutFor(ctx, t1.AccessToken, "globex"), ErrWrongTenant)
		if _, err := f.m.Verify(ctx, t1.AccessToken); err != nil {
			t.Fatalf("the session after another tenant's logout: %v", err)
		}
		t2, err := f.m.RefreshFor(ctx, t1.RefreshToken, "acme")
		if err != nil {
			t.Fatalf("refresh on its own tenant: %v", err)
		}
		// The spent t1 on another tenant: refused as another tenant's,
		// not as reuse (which would revoke the session).
		_, err = f.m.RefreshFor(ctx, t1.RefreshToken, "globex")
		wantErr(t, err, ErrWrongTenant)
		if _, err := f.m.Verify(ctx, t2.AccessToken); err != nil {
			t.Fatalf("the session after a spent token was shown to another tenant: %v", err)
		}
		_, err = f.m.RefreshFor(ctx, "x", "acme")
		wantErr(t, err, ErrInvalidRefresh)
		_, err = f.m.RefreshFor(ctx, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "acme")
		wantErr(t, err, ErrInvalidRefresh)
		if err := f.m.LogoutFor(ctx, t2.AccessToken, "acme"); err != nil {
			t.Fatal(err)
		}
		_, err = f.m.Verify(ctx, t2.AccessToken)
		wantErr(t, err, ErrRevoked)
	})
}
