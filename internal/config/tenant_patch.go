package config

import (
	"slices"
	"strings"
)

// TenantIndex is what validating a combination's tenants against one
// another needs of each: its domains (unique across tenants) and the
// issuers it trusts (require_tenant_claim's default depends on how many
// tenants trust an issuer), by tenant id. With it, WithTenantsPatch
// validates a change of a few tenants without walking the others: at
// 100,000 tenants a full WithTenants (defaults, Validate) takes ~0.4 s.
//
// An index belongs to one combination and follows it through patches
// (WithTenantsPatch updates it); it is not safe for concurrent use.
type TenantIndex struct {
	tenants map[string]indexedTenant
	domains map[string]string // lower-cased domain → tenant id
	issuers map[string]int    // issuer → how many tenants trust it
}

type indexedTenant struct {
	domains []string // lower-cased
	issuers []string
}

// DomainOwner is the tenant serving domain (case-insensitive), if any.
func (x *TenantIndex) DomainOwner(domain string) (string, bool) {
	id, ok := x.domains[strings.ToLower(domain)]
	return id, ok
}

// NewTenantIndex indexes the tenants of c, a combination that validated.
func NewTenantIndex(c *Config) *TenantIndex {
	x := &TenantIndex{tenants: make(map[string]indexedTenant, len(c.Tenants)),
		domains: make(map[string]string, 2*len(c.Tenants)), issuers: map[string]int{}}
	for i := range c.Tenants {
		x.add(&c.Tenants[i])
	}
	return x
}

// trustedIssuers are the issuers t trusts, each once.
func trustedIssuers(t *Tenant) []string {
	var out []string
	if t.JWT.Configured() && t.JWT.Issuer != "" {
		out = append(out, t.JWT.Issuer)
	}
	for _, o := range t.Issuers {
		if !slices.Contains(out, o.Issuer) {
			out = append(out, o.Issuer)
		}
	}
	return out
}

func (x *TenantIndex) add(t *Tenant) {
	it := indexedTenant{issuers: trustedIssuers(t)}
	for _, d := range t.Domains {
		key := strings.ToLower(d)
		it.domains = append(it.domains, key)
		x.domains[key] = t.ID
	}
	for _, iss := range it.issuers {
		x.issuers[iss]++
	}
	x.tenants[t.ID] = it
}

func (x *TenantIndex) remove(id string) {
	it, ok := x.tenants[id]
	if !ok {
		return
	}
	for _, d := range it.domains {
		if x.domains[d] == id {
			delete(x.domains, d)
		}
	}
	for _, iss := range it.issuers {
		if x.issuers[iss]--; x.issuers[iss] <= 0 {
			delete(x.issuers, iss)
		}
	}
	delete(x.tenants, id)
}

// Len is the number of tenants indexed.
func (x *TenantIndex) Len() int { return len(x.tenants) }

// WithTenantsPatch is c.WithTenants(source, extra) for a combination that
// differs from the one idx indexes (c.WithTenants(source, before), which
// validated) only in the tenants of extra at the indexes changed (new or
// edited: not yet defaulted) and in the tenants of before whose ids are
// gone; every other tenant of extra is before's, defaulted and validated
// there. It defaults and validates the changed tenants alone — with the
// file's tenants and every section, as Validate does — and checks their
// ids, domains and issuers against the others through idx, which it then
// updates. ok is false when the patch finds a problem: the caller runs the
// full WithTenants, whose errors are the ones to report (idx is then left
// as it was, for the combination still in force).
//
// What it does not repeat for the unchanged tenants: the check that their
// jwt.jwks_file exists (a file removed since is an error at its next use
// and at the next full composition).
//
// all is the combination's tenants: room for c's (filled here) followed
// by extra, and becomes the result's Tenants (no copy: at 100,000 tenants
// each is 85 MB of garbage per edit).
func (c *Config) WithTenantsPatch(source string, all []Tenant, changed []int, gone []string, idx *TenantIndex) (_ *Config, ok bool) {
	if len(all) < len(c.Tenants) {
		return nil, false
	}
	n := *c
	copy(all, c.Tenants)
	n.Tenants = all
	extra := all[len(c.Tenants):]
	replaced := make(map[string]bool, len(changed)+len(gone)) // ids whose indexed entries no longer count
	for _, id := range gone {
		replaced[id] = true
	}
	// The changed tenants with the file's: defaulted and validated as a
	// combination of their own (every section's checks, the file's
	// tenants for admin_tenant and runner.tenant_limits, uniqueness among
	// themselves).
	mini := n
	mini.Tenants = make([]Tenant, 0, len(c.Tenants)+len(changed))
	mini.Tenants = append(mini.Tenants, c.Tenants...)
	for _, i := range changed {
		if i < 0 || i >= len(extra) {
			return nil, false
		}
		t := extra[i]
		t.Source, t.Line = source, 0
		if _, ok := idx.tenants[t.ID]; ok {
			replaced[t.ID] = true // the tenant's previous version
		}
		mini.Tenants = append(mini.Tenants, t)
	}
	// require_tenant_claim's default counts every tenant trusting the
	// issuer, not only these.
	fresh := mini.Tenants[len(c.Tenants):]
	trusting := func(iss string) int {
		n := idx.issuers[iss]
		for id := range replaced {
			if slices.Contains(idx.tenants[id].issuers, iss) {
				n--
			}
		}
		for k := range fresh {
			if slices.Contains(trustedIssuers(&fresh[k]), iss) {
				n++
			}
		}
		return n
	}
	// An issuer the change makes shared (or no longer shared) changes the
	// default of the other tenants trusting it too: the full composition
	// decides them all.
	for id := range replaced {
		for _, iss := range idx.tenants[id].issuers {
			if (idx.issuers[iss] > 1) != (trusting(iss) > 1) {
				return nil, false
			}
		}
	}
	for k := range fresh {
		for _, iss := range trustedIssuers(&fresh[k]) {
			if (idx.issuers[iss] > 1) != (trusting(iss) > 1) {
				return nil, false
			}
		}
	}
	// The changed tenants, and the file's (defaulted when the file was
	// read, counting only the file's tenants), decided over every tenant.
	shared := func(iss string) bool { return trusting(iss) > 1 }
	for k := range fresh {
		fresh[k].clearTenantClaimDefaults()
		fresh[k].setTenantClaimDefaults(shared)
	}
	for k := range c.Tenants {
		all[k].clearTenantClaimDefaults()
		all[k].setTenantClaimDefaults(shared)
	}
	mini.SetDefaults()
	if mini.Validate() != nil {
		return nil, false
	}
	// Against the tenants left out: no id or domain of theirs.
	for k := range fresh {
		t := &fresh[k]
		if _, taken := idx.tenants[t.ID]; taken && !replaced[t.ID] {
			return nil, false
		}
		for _, d := range t.Domains {
			if owner, taken := idx.domains[strings.ToLower(d)]; taken && !replaced[owner] && owner != t.ID {
				return nil, false
			}
		}
	}
	tenants := n.Tenants
	n = mini // its sections defaulted, as WithTenants's are
	n.Tenants = tenants
	for k, i := range changed {
		n.Tenants[len(c.Tenants)+i] = fresh[k]
	}
	for id := range replaced {
		idx.remove(id)
	}
	for k := range fresh {
		idx.add(&fresh[k])
	}
	return &n, true
}
