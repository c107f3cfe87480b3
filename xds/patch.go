package xds

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"unsafe"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/xds/translate"
)

// maxPatchTenants is the most changed tenants a patch re-translates; more
// take the full translation (which reuses unchanged tenants' pieces too, but
// reads, validates, digests and indexes every tenant).
const maxPatchTenants = 1000

// Type indexes of the resources a tenant owns in per-tenant mode.
var (
	routeIdx   = cachev3.GetResponseType(resource.RouteType)
	scopeIdx   = cachev3.GetResponseType(resource.ScopedRouteType)
	clusterIdx = cachev3.GetResponseType(resource.ClusterType)
)

// patchTenants builds cfg's snapshot from base, the snapshot of prev, by
// translating only the tenants that differ between the two: the resources
// of a changed or added tenant (its route configuration, scopes and
// upstream cluster) are replaced or added, a removed tenant's are removed,
// nothing else is touched. Tenants are matched by id, so a tenant added or
// removed anywhere in the list (a tenant store change, an edit of the file)
// is a patch too. ok is false when the edit is not one a patch can make
// (then the full translation runs): not per-tenant routes in both,
// anything but tenants changed, more than maxPatchTenants tenants changed,
// added or removed, or one of them with a certificate (its listener filter
// chain and secret are global resources).
//
// The result equals the full translation's, resource for resource and in
// its versions and hash (TestPatchEqualsFull), so replicas that reached the
// same config by different paths serve the same version.
func patchTenants(prev, cfg *config.Config, base *snapshot) (_ *snapshot, ok bool, err error) {
	if prev == nil || base == nil || len(cfg.Tenants) == 0 || !sameExceptTenants(prev, cfg) ||
		!prev.PerTenantRoutes() || !cfg.PerTenantRoutes() {
		return nil, false, nil
	}
	d, ok := diffTenants(prev.Tenants, cfg.Tenants)
	if !ok {
		return nil, false, nil
	}
	if len(d.changed) == 0 && len(d.removed) == 0 {
		return base, true, nil
	}
	var changes []change
	if len(d.changed) > 0 {
		mini := *cfg
		mini.Tenants = make([]config.Tenant, 0, len(d.changed))
		for _, c := range d.changed {
			mini.Tenants = append(mini.Tenants, cfg.Tenants[c.cur])
		}
		in, err := ReadInputs(&mini)
		if err != nil {
			return nil, true, err
		}
		res, digests, err := translate.TranslateCached(&mini, in, nil)
		if err != nil {
			return nil, true, err
		}
		if changes, err = tenantChanges(prev, cfg, d, res, digests, base); err != nil {
			return nil, true, err
		}
	} else if changes, err = tenantChanges(prev, cfg, d, &translate.Resources{}, nil, base); err != nil {
		return nil, true, err
	}
	return base.patch(changes), true, nil
}

// tenantDiff is how two tenant lists differ: changed are the tenants of the
// new list that are new or differ (prev is their index in the old list, -1
// when new), removed the old list's tenants that are gone.
type tenantDiff struct {
	changed []changedTenant
	removed []int
}

type changedTenant struct{ prev, cur int }

// diffTenants compares two tenant lists by id; ok is false when more than
// maxPatchTenants differ or a tenant that differs has a certificate. Lists
// in the same order are compared position by position; otherwise the old
// one is indexed by id.
func diffTenants(prev, cur []config.Tenant) (d tenantDiff, ok bool) {
	hasTLS := func(t *config.Tenant) bool { return !reflect.ValueOf(t.TLS).IsZero() }
	note := func(p, c int) bool {
		if (p >= 0 && hasTLS(&prev[p])) || hasTLS(&cur[c]) || len(d.changed)+len(d.removed) == maxPatchTenants {
			return false
		}
		d.changed = append(d.changed, changedTenant{prev: p, cur: c})
		return true
	}
	i := 0
	for ; i < len(prev) && i < len(cur) && prev[i].ID == cur[i].ID; i++ {
		if !sameTenant(&prev[i], &cur[i]) && !note(i, i) {
			return d, false
		}
	}
	if i == len(prev) && i == len(cur) {
		return d, true
	}
	// The lists part at i: match the rest by id. A tenant id twice in cur
	// is left to the full translation, which refuses it.
	old := make(map[string]int, len(prev))
	for j := range prev {
		old[prev[j].ID] = j
	}
	matched := make(map[int]bool, len(prev)-i)
	for c := i; c < len(cur); c++ {
		p, found := old[cur[c].ID]
		switch {
		case !found:
			p = -1
		case p < i || matched[p]:
			return d, false
		default:
			matched[p] = true
			if sameTenant(&prev[p], &cur[c]) {
				continue
			}
		}
		if !note(p, c) {
			return d, false
		}
	}
	for p := i; p < len(prev); p++ {
		if matched[p] {
			continue
		}
		if hasTLS(&prev[p]) || len(d.changed)+len(d.removed) == maxPatchTenants {
			return d, false
		}
		d.removed = append(d.removed, p)
	}
	return d, true
}

// tenantChanges are the changes that turn base's resources of the changed
// and removed tenants into those of res (the changed tenants' translation
// alone): removals first, so a domain one tenant gives up and another takes
// moves.
func tenantChanges(prev, cfg *config.Config, d tenantDiff, res *translate.Resources, digests translate.Digests, base *snapshot) ([]change, error) {
	routes := map[string]types.Resource{}
	for _, r := range res.Routes {
		routes[cachev3.GetResourceName(r)] = r
	}
	scopes := map[string][]*routev3.ScopedRouteConfiguration{} // route configuration → its scopes
	for _, r := range res.ScopedRoutes {
		s := r.(*routev3.ScopedRouteConfiguration)
		scopes[s.RouteConfigurationName] = append(scopes[s.RouteConfigurationName], s)
	}
	clusters := map[string]types.Resource{}
	for _, r := range res.Clusters {
		clusters[cachev3.GetResourceName(r)] = r
	}
	rcOf := map[string]bool{} // the changed and removed tenants' route configurations
	for _, c := range d.changed {
		rcOf[translate.TenantRouteConfigName(cfg.Tenants[c.cur].ID)] = true
	}
	var removed, set []change
	for _, p := range d.removed {
		o := &prev.Tenants[p]
		rcOf[translate.TenantRouteConfigName(o.ID)] = true
		removed = append(removed, change{typ: routeIdx, name: translate.TenantRouteConfigName(o.ID)})
		for _, s := range oldScopes(o.Domains) {
			removed = append(removed, change{typ: scopeIdx, name: s})
		}
		if len(o.Upstreams) > 0 {
			removed = append(removed, change{typ: clusterIdx, name: translate.UpstreamClusterName(o.ID)})
		}
	}
	for _, c := range d.changed {
		t := &cfg.Tenants[c.cur]
		rcName := translate.TenantRouteConfigName(t.ID)
		rc, ok := routes[rcName]
		if !ok {
			return nil, fmt.Errorf("tenant %q: no route configuration translated", t.ID)
		}
		set = append(set, change{typ: routeIdx, name: rcName, r: rc, version: hex.EncodeToString(digests[rc])})
		keep := map[string]bool{}
		for _, s := range scopes[rcName] {
			keep[s.Name] = true
			if owner, ok := base.plain[scopeIdx][s.Name]; ok {
				if other := owner.(*routev3.ScopedRouteConfiguration).RouteConfigurationName; other != rcName && !rcOf[other] {
					return nil, fmt.Errorf("tenant %q: domains: %q is already served by tenant %q",
						t.ID, s.Name, strings.TrimPrefix(other, translate.TenantRouteConfigPrefix))
				}
			}
			set = append(set, change{typ: scopeIdx, name: s.Name, r: s, version: hex.EncodeToString(digests[s])})
		}
		var o *config.Tenant
		if c.prev >= 0 {
			o = &prev.Tenants[c.prev]
			for _, d := range oldScopes(o.Domains) {
				if !keep[d] {
					removed = append(removed, change{typ: scopeIdx, name: d})
				}
			}
		}
		cname := translate.UpstreamClusterName(t.ID)
		if cl, ok := clusters[cname]; ok {
			b, err := cachev3.MarshalResource(cl)
			if err != nil {
				return nil, err
			}
			set = append(set, change{typ: clusterIdx, name: cname, r: cl, version: cachev3.HashResource(b)})
		} else if o != nil && len(o.Upstreams) > 0 {
			removed = append(removed, change{typ: clusterIdx, name: cname})
		}
	}
	return append(removed, set...), nil
}

// oldScopes are the scope names of a tenant's domains in a config that was
// translated: lower-cased, trimmed, without duplicates (as the IR has them).
func oldScopes(domains []string) []string {
	out := make([]string, 0, len(domains))
	for _, d := range domains {
		out = append(out, strings.ToLower(strings.TrimSpace(d)))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// sameExceptTenants reports whether a and b differ in their tenants only.
func sameExceptTenants(a, b *config.Config) bool {
	x, y := *a, *b
	x.Tenants, y.Tenants = nil, nil
	return reflect.DeepEqual(x, y)
}

// sameTenant reports whether two tenants are equal but for where they start
// in the file (an edit above them moves them). Other line numbers inside a
// tenant make it look changed: it is then re-translated to the same
// resources, and nothing is sent for it.
func sameTenant(a, b *config.Tenant) bool {
	if sameBits(a, b) {
		return true
	}
	if a.Line == b.Line {
		return reflect.DeepEqual(a, b)
	}
	x, y := *a, *b
	x.Line, y.Line = 0, 0
	return reflect.DeepEqual(&x, &y)
}

// sameBits reports whether a and b hold the same bytes: a tenant copied
// unchanged from one config to the next (as the tenant store composes its
// tenants: every string and slice shared), found without walking it with
// reflection. Equal bytes mean equal tenants; unequal ones are compared
// field by field.
func sameBits(a, b *config.Tenant) bool {
	n := unsafe.Sizeof(*a)
	return bytes.Equal(unsafe.Slice((*byte)(unsafe.Pointer(a)), n), unsafe.Slice((*byte)(unsafe.Pointer(b)), n))
}
