package config

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
)

// TestWithTenantsPatchEqualsFull edits a combination of stored tenants a
// few at a time (new, changed, removed; issuers shared and not) and checks
// every patched combination equals the full WithTenants's, tenant for
// tenant (defaults, require_tenant_claim included), and that every edit the
// full validation refuses the patch refuses too.
func TestWithTenantsPatchEqualsFull(t *testing.T) {
	c := storeConfig(t, "tenant_store: {postgres_dsn: 'postgres://x@127.0.0.1/db', admin_tenant: ops}\n")
	parse := func(doc string) Tenant { return mustParseTenant(t, doc) }
	doc := func(id, domain, issuer string) Tenant {
		return parse(fmt.Sprintf(`{"id": %q, "domains": [%q, "www.%s"], "jwt": {"issuer": %q, "audiences": ["a"], "jwks_file": "k.json"}}`, id, domain, domain, issuer))
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var ids []string
	byID := map[string]Tenant{} // the raw (undefaulted) documents
	for i := range 30 {
		id := fmt.Sprintf("t%02d", i)
		ids = append(ids, id)
		byID[id] = doc(id, id+".test", fmt.Sprintf("iss%d", i%20))
	}
	raw := func() []Tenant {
		out := make([]Tenant, 0, len(ids))
		for _, id := range ids {
			out = append(out, byID[id])
		}
		return out
	}
	cur, err := c.WithTenants("tenant store", raw())
	if err != nil {
		t.Fatal(err)
	}
	idx := NewTenantIndex(cur)
	patched, refused, fellBack := 0, 0, 0
	for step := range 300 {
		// The edit: from the combination in force, as tenantstore composes.
		nextIDs := append([]string(nil), ids...)
		next := map[string]Tenant{}
		for k, v := range byID {
			next[k] = v
		}
		changedIDs := map[string]bool{}
		var gone []string
		for range 1 + rng.IntN(2) {
			switch rng.IntN(5) {
			case 0: // a new tenant, maybe claiming a taken domain or id
				id := fmt.Sprintf("n%03d", step)
				dom := id + ".test"
				if rng.IntN(3) == 0 {
					dom = nextIDs[rng.IntN(len(nextIDs))] + ".test"
				}
				if rng.IntN(8) == 0 {
					id = "ops" // the file's
				}
				if _, dup := next[id]; dup {
					continue
				}
				nextIDs = append(nextIDs, id)
				next[id] = doc(id, dom, fmt.Sprintf("iss%d", rng.IntN(40)))
				changedIDs[id] = true
			case 1: // removed
				if len(nextIDs) < 5 {
					continue
				}
				k := rng.IntN(len(nextIDs))
				id := nextIDs[k]
				nextIDs = append(nextIDs[:k:k], nextIDs[k+1:]...)
				delete(next, id)
				if !changedIDs[id] {
					gone = append(gone, id)
				}
				delete(changedIDs, id)
			default: // changed: another issuer, another domain (maybe taken), or broken
				id := nextIDs[rng.IntN(len(nextIDs))]
				dom := fmt.Sprintf("%s-%d.test", id, step)
				switch rng.IntN(4) {
				case 0:
					dom = nextIDs[rng.IntN(len(nextIDs))] + ".test"
				case 1:
					dom = "not a host"
				}
				next[id] = doc(id, dom, fmt.Sprintf("iss%d", rng.IntN(40)))
				changedIDs[id] = true
			}
		}
		extra := make([]Tenant, len(nextIDs))
		var changed []int
		for i, id := range nextIDs {
			if changedIDs[id] {
				extra[i] = next[id]
				changed = append(changed, i)
				continue
			}
			for j := range cur.Tenants { // the tenant as defaulted and validated in the combination in force
				if cur.Tenants[j].ID == id && cur.Tenants[j].Source != "" {
					extra[i] = cur.Tenants[j]
				}
			}
		}
		full, ferr := c.WithTenants("tenant store", append([]Tenant(nil), extra...))
		all := append(make([]Tenant, len(c.Tenants)), extra...)
		got, ok := c.WithTenantsPatch("tenant store", all, changed, gone, idx)
		switch {
		case ferr != nil && ok:
			t.Fatalf("step %d: the patch accepted what the full validation refuses: %v", step, ferr)
		case ferr == nil && !ok:
			// Only an edit that makes an issuer shared or no longer shared
			// (which changes other tenants' require_tenant_claim default)
			// is left to the full composition.
			before, after := NewTenantIndex(cur).issuers, NewTenantIndex(full).issuers
			crossed := false
			for iss := range before {
				crossed = crossed || (before[iss] > 1) != (after[iss] > 1)
			}
			for iss := range after {
				crossed = crossed || (before[iss] > 1) != (after[iss] > 1)
			}
			if !crossed {
				t.Fatalf("step %d: the patch refused a valid edit (changed %v, gone %v)", step, changed, gone)
			}
			fellBack++
			cur, ids, byID, idx = full, nextIDs, next, NewTenantIndex(full)
			continue
		case ferr != nil:
			refused++
			continue
		}
		patched++
		if !reflect.DeepEqual(got, full) {
			for i := range full.Tenants {
				if !reflect.DeepEqual(got.Tenants[i], full.Tenants[i]) {
					t.Fatalf("step %d: tenant %d differs:\npatch %+v\nfull  %+v", step, i, got.Tenants[i], full.Tenants[i])
				}
			}
			t.Fatalf("step %d: the patched combination differs from the full one", step)
		}
		cur, ids, byID = got, nextIDs, next
		if want := NewTenantIndex(cur); !reflect.DeepEqual(idx.domains, want.domains) || !reflect.DeepEqual(idx.issuers, want.issuers) || idx.Len() != want.Len() {
			t.Fatalf("step %d: the index after the patch differs from one built anew", step)
		}
	}
	t.Logf("%d edits patched, %d refused by both, %d left to the full composition", patched, refused, fellBack)
	if patched < 60 || refused < 20 || fellBack == 0 {
		t.Fatalf("%d edits patched, %d refused, %d left to the full composition: the edits do not cover each", patched, refused, fellBack)
	}
}

// require_tenant_claim's default follows the tenants trusting an issuer,
// whichever composition decides it: tenant a (in the file) trusts iss
// alone, so it does not require the claim; once a stored tenant b trusts
// iss too, a token of iss without the claim would pass at both, so a
// requires it — through the full composition and the patch — and no longer
// once b is gone. An explicit setting is never changed.
func TestTenantClaimDefaultFollowsCoTrusters(t *testing.T) {
	c := storeConfig(t, "tenant_store: {postgres_dsn: 'postgres://x@127.0.0.1/db', admin_tenant: ops}\n")
	parse := func(doc string) Tenant { return mustParseTenant(t, doc) }
	stored := func(id, iss string) Tenant {
		return parse(fmt.Sprintf(`{"id": %q, "domains": ["%s.test"], "jwt": {"issuer": %q, "audiences": ["a"], "jwks_file": "k.json"}}`, id, id, iss))
	}
	require := func(cfg *Config, id string) bool {
		t.Helper()
		for _, tn := range cfg.Tenants {
			if tn.ID == id {
				return *tn.JWT.RequireTenantClaim
			}
		}
		t.Fatalf("no tenant %q", id)
		return false
	}
	// The file's tenant "ops" trusts its own issuer; find it.
	var opsIss string
	for _, tn := range c.Tenants {
		if tn.ID == "ops" {
			opsIss = tn.JWT.Issuer
		}
	}
	if opsIss == "" {
		t.Fatal("the store config's ops tenant has no jwt issuer: the test needs one")
	}
	one, err := c.WithTenants("tenant store", []Tenant{stored("x", "other")})
	if err != nil {
		t.Fatal(err)
	}
	if require(one, "ops") {
		t.Fatal("ops requires the tenant claim while it alone trusts its issuer")
	}
	// Full composition: b trusts ops's issuer.
	two, err := c.WithTenants("tenant store", []Tenant{one.Tenants[len(c.Tenants)], stored("b", opsIss)})
	if err != nil {
		t.Fatal(err)
	}
	if !require(two, "ops") || !require(two, "b") {
		t.Fatal("a shared issuer: both tenants must require the tenant claim (full composition)")
	}
	// The patch: the same edit from one.
	idx := NewTenantIndex(one)
	all := append(make([]Tenant, len(c.Tenants)), one.Tenants[len(c.Tenants)], stored("b", opsIss))
	if got, ok := c.WithTenantsPatch("tenant store", all, []int{1}, nil, idx); ok && (!require(got, "ops") || !require(got, "b")) {
		t.Fatal("a shared issuer: both tenants must require the tenant claim (patch)")
	}
	// b gone again, from two's defaulted tenants: ops alone once more.
	three, err := c.WithTenants("tenant store", []Tenant{two.Tenants[len(c.Tenants)]})
	if err != nil {
		t.Fatal(err)
	}
	if require(three, "ops") {
		t.Fatal("ops still requires the tenant claim after the co-trusting tenant left")
	}
	// An explicit false stays false even when shared.
	explicit := parse(fmt.Sprintf(`{"id": "e", "domains": ["e.test"], "jwt": {"issuer": %q, "audiences": ["a"], "jwks_file": "k.json", "require_tenant_claim": false}}`, opsIss))
	four, err := c.WithTenants("tenant store", []Tenant{explicit})
	if err != nil {
		t.Fatal(err)
	}
	if require(four, "e") || !require(four, "ops") {
		t.Fatal("an explicit require_tenant_claim: false was changed, or ops's default ignored e")
	}
}
