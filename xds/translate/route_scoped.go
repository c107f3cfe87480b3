package translate

// Per-tenant routes (envoy.routes per_tenant): Envoy's scoped routes. Each
// tenant has its own route configuration, and one scope per domain maps the
// request's exact host to it. A one-tenant edit changes one route
// configuration (and its scopes), so with delta xDS Envoy receives and
// rebuilds that tenant only, whatever the number of tenants; with one route
// configuration Envoy rebuilds every virtual host on every edit (about 1-2 s
// at 10,000 tenants on 2 cores).
//
// What per-tenant routing changes for requests:
//   - A host no scope names has no route: Envoy answers 404 itself (response
//     flag NR), which the connection manager's local reply mapper turns into
//     the same "unknown host" answer as the single table's catch-all.
//     ext_authz checks no request without a route, so such a request is
//     never authorized (and the authz server denies a Check without a
//     tenant: 404).
//   - Scope keys are exact strings: domains must be exact host names, and the
//     request's host is lowercased first (filter_hostcase.go).
//   - The HTTP→HTTPS redirect is the first route of a tenant's virtual host
//     (one route configuration serves both listeners); the virtual host's IP
//     allowlist, CORS and local limit apply to it, ext_authz does not.

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
)

const (
	// ScopedRoutesName names the scoped routes of the connection managers
	// in per-tenant mode.
	ScopedRoutesName = "kailash_scopes"
	// TenantRouteConfigPrefix followed by the tenant id names a tenant's
	// route configuration in per-tenant mode.
	TenantRouteConfigPrefix = "kailash_routes_"
	// hostKeyHeader is what the scope key is built from: the request's
	// host (port already stripped by the connection manager).
	hostKeyHeader = ":authority"
)

// TenantRouteConfigName is the name of tenant id's route configuration in
// per-tenant mode.
func TenantRouteConfigName(id string) string { return TenantRouteConfigPrefix + id }

// scopedRoutes is the connection manager's route specifier in per-tenant
// mode: scopes over ADS (SRDS), keyed by the whole host, whose route
// configurations come over ADS too (RDS).
func scopedRoutes() *hcmv3.HttpConnectionManager_ScopedRoutes {
	type fb = hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder
	return &hcmv3.HttpConnectionManager_ScopedRoutes{ScopedRoutes: &hcmv3.ScopedRoutes{
		Name: ScopedRoutesName,
		ScopeKeyBuilder: &hcmv3.ScopedRoutes_ScopeKeyBuilder{Fragments: []*fb{{
			Type: &hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder_HeaderValueExtractor_{
				HeaderValueExtractor: &hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder_HeaderValueExtractor{
					Name: hostKeyHeader,
					// A separator no host contains: element 0 is the
					// whole value.
					ElementSeparator: ",",
					ExtractType:      &hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder_HeaderValueExtractor_Index{Index: 0},
				},
			},
		}}},
		RdsConfigSource: adsSource(),
		ConfigSpecifier: &hcmv3.ScopedRoutes_ScopedRds{ScopedRds: &hcmv3.ScopedRds{ScopedRdsConfigSource: adsSource()}},
	}}
}

// tenantRoutes are one tenant's resources in per-tenant mode: its route
// configuration and its scopes, with the digests of both. Immutable once
// built; a cache entry keeps them for the next translation.
type tenantRoutes struct {
	rc        *routev3.RouteConfiguration
	rcSum     []byte
	scopes    []*routev3.ScopedRouteConfiguration
	scopeSums [][]byte
}

// buildTenantRoutes is, in per-tenant mode, one route configuration per
// tenant (sorted by tenant id, as ir.VirtualHosts is) and one scope per
// domain (sorted by name). With a cache, unchanged tenants keep their
// resources, and every resource's digest goes into digests.
func buildTenantRoutes(ir *IR, filters []httpFilter, c *Cache, digests Digests) (routes, scopes []types.Resource, err error) {
	name := func(vh *VirtualHost) string { return TenantRouteConfigName(vh.TenantID) }
	entries, err := c.virtualHosts(ir, name, "scoped", func(vh *VirtualHost) (*cachedVH, error) {
		e, err := newCachedVH(scopedVirtualHost(ir, vh, filters))
		if err == nil {
			e.tenant, err = newTenantRoutes(name(vh), vh, e.vh, e.sum[:])
		}
		return e, err
	})
	if err != nil {
		return nil, nil, err
	}
	for _, e := range entries {
		tr := e.tenant
		digests[tr.rc] = tr.rcSum
		routes = append(routes, tr.rc)
		for j, s := range tr.scopes {
			digests[s] = tr.scopeSums[j]
			scopes = append(scopes, s)
		}
	}
	slices.SortFunc(scopes, func(a, b types.Resource) int {
		return strings.Compare(a.(*routev3.ScopedRouteConfiguration).Name, b.(*routev3.ScopedRouteConfiguration).Name)
	})
	return routes, scopes, nil
}

// newTenantRoutes wraps a tenant's validated virtual host v in its route
// configuration name and builds its scopes, with their digests: the route
// configuration's from vhSum (the digest of v), the scopes' from their
// encoding.
func newTenantRoutes(name string, vh *VirtualHost, v *routev3.VirtualHost, vhSum []byte) (*tenantRoutes, error) {
	tr := &tenantRoutes{rc: &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{v}}}
	h := sha256.New()
	fmt.Fprintf(h, "scoped-rc:%d:%s:", len(name), name)
	h.Write(vhSum)
	tr.rcSum = h.Sum(nil)
	for _, d := range scopeKeys(vh.Domains) {
		s := &routev3.ScopedRouteConfiguration{
			Name:                   d,
			RouteConfigurationName: name,
			Key: &routev3.ScopedRouteConfiguration_Key{Fragments: []*routev3.ScopedRouteConfiguration_Key_Fragment{{
				Type: &routev3.ScopedRouteConfiguration_Key_Fragment_StringKey{StringKey: d},
			}}},
		}
		if err := s.ValidateAll(); err != nil {
			return nil, fmt.Errorf("scope %q: %w", d, err)
		}
		sum, err := sumProto(s)
		if err != nil {
			return nil, err
		}
		tr.scopeSums = append(tr.scopeSums, sum[:])
		tr.scopes = append(tr.scopes, s)
	}
	return tr, nil
}

// scopedVirtualHost is a tenant's virtual host in its own route
// configuration: the same as in the single table, and with tls.redirect_http
// a tenant with a certificate first answers plain-HTTP requests with a 301
// to HTTPS (one route configuration serves both listeners). The scheme is
// x-forwarded-proto, which Envoy, at the edge (use_remote_address), sets from
// the downstream connection whatever the client sent.
func scopedVirtualHost(ir *IR, vh *VirtualHost, filters []httpFilter) (*routev3.VirtualHost, error) {
	v, err := tenantVirtualHost(ir, vh, filters)
	if err != nil || !redirecting(ir) || vh.TLS == nil {
		return v, err
	}
	rd, err := redirectRoute(ir, filters)
	if err != nil {
		return nil, err
	}
	rd.Match.Headers = []*routev3.HeaderMatcher{{
		Name: "x-forwarded-proto",
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "http"},
		}},
	}}
	v.Routes = append([]*routev3.Route{rd}, v.Routes...)
	return v, nil
}

// scopeKeys are the scope keys of a tenant's domains: exact host names
// (config validation guarantees it in per-tenant mode), lowercased, sorted,
// without duplicates.
func scopeKeys(domains []string) []string {
	out := make([]string, 0, len(domains))
	for _, d := range domains {
		out = append(out, strings.ToLower(d))
	}
	slices.Sort(out)
	return slices.Compact(out)
}
