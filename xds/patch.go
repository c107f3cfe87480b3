package xds

import (
	"encoding/hex"
	"fmt"
	"reflect"
	"slices"
	"strings"

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
// translating only the tenants that differ between the two: their route
// configuration, scopes and upstream cluster are replaced, nothing else is
// touched. ok is false when the edit is not one a patch can make (then the
// full translation runs): not per-tenant routes in both, anything but
// tenants changed, tenants added, removed or reordered, more than
// maxPatchTenants changed, or a changed tenant with a certificate (its
// listener filter chain and secret are global resources).
//
// The result equals the full translation's, resource for resource and in
// its versions and hash (TestPatchEqualsFull), so replicas that reached the
// same config by different paths serve the same version.
func patchTenants(prev, cfg *config.Config, base *snapshot) (_ *snapshot, ok bool, err error) {
	if prev == nil || base == nil || len(prev.Tenants) != len(cfg.Tenants) || !sameExceptTenants(prev, cfg) ||
		!prev.PerTenantRoutes() || !cfg.PerTenantRoutes() {
		return nil, false, nil
	}
	var changed []int
	for i := range cfg.Tenants {
		o, t := &prev.Tenants[i], &cfg.Tenants[i]
		if o.ID != t.ID {
			return nil, false, nil
		}
		if sameTenant(o, t) {
			continue
		}
		if len(changed) == maxPatchTenants || !reflect.ValueOf(o.TLS).IsZero() || !reflect.ValueOf(t.TLS).IsZero() {
			return nil, false, nil
		}
		changed = append(changed, i)
	}
	if len(changed) == 0 {
		return base, true, nil
	}
	mini := *cfg
	mini.Tenants = make([]config.Tenant, 0, len(changed))
	for _, i := range changed {
		mini.Tenants = append(mini.Tenants, cfg.Tenants[i])
	}
	in, err := ReadInputs(&mini)
	if err != nil {
		return nil, true, err
	}
	res, digests, err := translate.TranslateCached(&mini, in, nil)
	if err != nil {
		return nil, true, err
	}
	changes, err := tenantChanges(prev, cfg, changed, res, digests, base)
	if err != nil {
		return nil, true, err
	}
	return base.patch(changes), true, nil
}

// tenantChanges are the changes that turn base's resources of the changed
// tenants into those of res (their translation alone): removals first, so
// a domain one changed tenant gives up and another takes moves.
func tenantChanges(prev, cfg *config.Config, changed []int, res *translate.Resources, digests translate.Digests, base *snapshot) ([]change, error) {
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
	rcOf := map[string]bool{} // the changed tenants' route configurations
	for _, i := range changed {
		rcOf[translate.TenantRouteConfigName(cfg.Tenants[i].ID)] = true
	}
	var removed, set []change
	for _, i := range changed {
		o, t := &prev.Tenants[i], &cfg.Tenants[i]
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
		for _, d := range oldScopes(o.Domains) {
			if !keep[d] {
				removed = append(removed, change{typ: scopeIdx, name: d})
			}
		}
		cname := translate.UpstreamClusterName(t.ID)
		if c, ok := clusters[cname]; ok {
			b, err := cachev3.MarshalResource(c)
			if err != nil {
				return nil, err
			}
			set = append(set, change{typ: clusterIdx, name: cname, r: c, version: cachev3.HashResource(b)})
		} else if len(o.Upstreams) > 0 {
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
	if a.Line == b.Line {
		return reflect.DeepEqual(a, b)
	}
	x, y := *a, *b
	x.Line, y.Line = 0, 0
	return reflect.DeepEqual(&x, &y)
}
