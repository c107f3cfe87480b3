package translate

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/kailash-gw/kailash/internal/wire"
)

// buildRouteConfigs is RouteConfigName and, when the plain listener
// redirects to HTTPS, RedirectRouteConfigName (sorted by name). With a cache
// the unchanged tenants' virtual hosts are reused, and the route
// configurations' digests are recorded in digests.
func buildRouteConfigs(ir *IR, filters []httpFilter, c *Cache, digests Digests) ([]types.Resource, error) {
	rc, err := buildRouteConfig(ir, filters, RouteConfigName, false, c, digests)
	if err != nil {
		return nil, fmt.Errorf("route configuration %s: %w", RouteConfigName, err)
	}
	out := []types.Resource{rc}
	if redirecting(ir) {
		rc, err := buildRouteConfig(ir, filters, RedirectRouteConfigName, true, c, digests)
		if err != nil {
			return nil, fmt.Errorf("route configuration %s: %w", RedirectRouteConfigName, err)
		}
		out = append(out, rc)
	}
	return out, nil
}

// buildRouteConfig is one virtual host per tenant, in tenant order, then the
// catch-all that answers 404 for any other host. With redirect, tenants with
// a certificate answer every request with a redirect to HTTPS. Unchanged
// tenants keep their cached virtual hosts, and the route configuration's
// digest (in digests) is made from the virtual hosts' digests instead of
// encoding all of them again.
func buildRouteConfig(ir *IR, filters []httpFilter, name string, redirect bool, c *Cache, digests Digests) (*routev3.RouteConfiguration, error) {
	kind := "tenant"
	if redirect {
		kind = "tenant-or-redirect"
	}
	entries, err := c.virtualHosts(ir, func(*VirtualHost) string { return name }, kind, func(vh *VirtualHost) (*cachedVH, error) {
		if redirect && vh.TLS != nil {
			return newCachedVH(redirectVirtualHost(ir, vh, filters))
		}
		return newCachedVH(tenantVirtualHost(ir, vh, filters))
	})
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	unknown, uerr := newCachedVH(unknownVirtualHost(ir, filters))
	if uerr != nil {
		errs = append(errs, fmt.Errorf("%s: %w", UnknownHostName, uerr))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	rc := &routev3.RouteConfiguration{Name: name}
	// The route configuration without its virtual hosts (validated and
	// encoded alone), then the virtual hosts' digests in order.
	if err := rc.ValidateAll(); err != nil {
		return nil, err
	}
	shell, err := proto.MarshalOptions{Deterministic: true}.Marshal(rc)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%d:", len(shell))
	h.Write(shell)
	for _, e := range append(entries, unknown) {
		rc.VirtualHosts = append(rc.VirtualHosts, e.vh)
		h.Write(e.sum[:])
	}
	digests[rc] = h.Sum(nil)
	return rc, nil
}

// InactiveStatus is the answer for every request to an inactive tenant.
const InactiveStatus = 403

// inactiveBody is the body of that answer.
func inactiveBody(tenant string) string {
	return "tenant " + tenant + " is inactive: requests are refused\n"
}

func tenantVirtualHost(ir *IR, vh *VirtualHost, filters []httpFilter) (*routev3.VirtualHost, error) {
	if !vh.Active {
		return inactiveVirtualHost(ir, vh, filters)
	}
	perFilter, err := perFilterConfig(filters, func(f httpFilter) (proto.Message, error) { return f.tenantConfig(ir, vh) })
	if err != nil {
		return nil, err
	}
	var routes []*routev3.Route
	if ir.AuthHTTP != nil {
		r, err := authRoute(ir, vh)
		if err != nil {
			return nil, err
		}
		routes = append(routes, r)
	}
	if vh.AdminAPI && ir.AuthHTTP != nil {
		routes = append(routes, adminRoute()) // its prefix holds every tenant's API keys too
	} else if vh.APIKeys != "" && ir.AuthHTTP != nil {
		routes = append(routes, apiKeysRoute(vh))
	}
	main := &routev3.Route{
		Match: prefixMatch("/"),
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: vh.Cluster},
			Timeout:          durationpb.New(vh.Timeout),
			// WebSocket upgrades pass ext_authz like any request (the
			// upgrade request carries the token), then stream; the route
			// timeout does not apply to the upgraded stream.
			UpgradeConfigs: []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "websocket"}},
		}},
	}
	if vh.StreamIdleTimeout > 0 {
		main.GetRoute().IdleTimeout = durationpb.New(vh.StreamIdleTimeout)
	}
	if vh.Cluster == RunnerCluster {
		// Our runner's replicas: a request that cannot have reached one
		// goes to another (retry.go); a tenant's own upstream is left as
		// the tenant configured it.
		main.GetRoute().RetryPolicy = routeRetryPolicy()
	}
	if vh.Cluster != RunnerCluster {
		// The identity token is the runner's credential: a tenant's own
		// upstream that received it could replay it to the runner. The
		// router removes it after ext_authz set it.
		main.RequestHeadersToRemove = []string{wire.HeaderIdentity}
	}
	routes = append(routes, main)
	return &routev3.VirtualHost{
		Name:                 vh.Name(),
		Domains:              append([]string(nil), vh.Domains...),
		Routes:               routes,
		TypedPerFilterConfig: perFilter,
	}, nil
}

// AuthRouteTimeout bounds a login endpoint request (an LDAP bind or a SAML
// response check).
const AuthRouteTimeout = 15 * time.Second

// identityHeaders are the upstream identity headers ext_authz sets on allow.
// The login endpoints run without ext_authz; Envoy has removed any a client
// sent before routing (connectionManager), and removes them again here; the
// tenant header is overwritten with the virtual host's tenant.
var identityHeaders = []string{wire.HeaderUser, wire.HeaderRoles, wire.HeaderIdentity}

// authRoute sends the tenant's login endpoints (/auth/...) to the authz
// server's HTTP address without an ext_authz check (the caller is logging in:
// it has no identity yet). The tenant comes from the virtual host, as the
// x-kailash-tenant header that Envoy sets, never from the client. The
// virtual host's other filters (IP allowlist, CORS, the local limit) still
// apply; the global rate limit counts the tenant's login quota only
// (authRateLimits).
func authRoute(ir *IR, vh *VirtualHost) (*routev3.Route, error) {
	shared, err := sharedAuthRoute()
	if err != nil {
		return nil, err
	}
	perFilter := map[string]*anypb.Any{wellknown.HTTPExternalAuthorization: shared.extAuthzOff}
	rl, err := authRateLimits(ir, vh)
	if err != nil {
		return nil, fmt.Errorf("route auth: http filter %s: %w", wellknown.HTTPRateLimit, err)
	}
	if rl != nil {
		a, err := toAny(rl)
		if err != nil {
			return nil, err
		}
		perFilter[wellknown.HTTPRateLimit] = a
	}
	return &routev3.Route{
		Name:  "auth",
		Match: shared.match,
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: AuthzHTTPCluster},
			Timeout:          shared.timeout,
			RetryPolicy:      routeRetryPolicy(),
		}},
		RequestHeadersToAdd: []*corev3.HeaderValueOption{{
			Header:       &corev3.HeaderValue{Key: wire.HeaderTenant, Value: vh.TenantID},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}},
		RequestHeadersToRemove: slices.Clone(identityHeaders),
		TypedPerFilterConfig:   perFilter,
	}, nil
}

// adminRoute sends the tenant admin API (the admin tenant's only) to the
// authz server's HTTP port. Unlike the login route, ext_authz runs: the
// policy decides each call, and on allow ext_authz sets the identity token
// the API takes its actor from.
func adminRoute() *routev3.Route {
	return &routev3.Route{
		Name:  "admin_tenants",
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: wire.AdminTenantsPath}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: AuthzHTTPCluster},
			Timeout:          durationpb.New(AuthRouteTimeout),
		}},
	}
}

// apiKeysRoute sends the API keys admin API to the authz server's HTTP
// port with ext_authz on (as adminRoute): on the admin tenant's domains
// every tenant's keys, on any other tenant's its own only — another
// tenant's path there goes the tenant's main route, where the shipped
// policy refuses it.
func apiKeysRoute(vh *VirtualHost) *routev3.Route {
	match := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: wire.AdminAPIKeysPath(vh.TenantID)}}
	if vh.APIKeys == APIKeysAll {
		match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{
			Regex: regexp.QuoteMeta(wire.AdminTenantsPath+"/") + "[^/]+" + regexp.QuoteMeta("/"+wire.AdminAPIKeysSegment) + "(/.*)?"}}}
	}
	return &routev3.Route{
		Name:  "admin_api_keys",
		Match: match,
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: AuthzHTTPCluster},
			Timeout:          durationpb.New(AuthRouteTimeout),
		}},
	}
}

// inactiveVirtualHost refuses every request of an inactive tenant at the
// edge, with no filter doing anything (ext_authz is not called): the same
// per-filter configs as the unknown host.
func inactiveVirtualHost(ir *IR, vh *VirtualHost, filters []httpFilter) (*routev3.VirtualHost, error) {
	perFilter, err := perFilterConfig(filters, func(f httpFilter) (proto.Message, error) { return f.unknownHostConfig(ir) })
	if err != nil {
		return nil, err
	}
	return &routev3.VirtualHost{
		Name:    vh.Name(),
		Domains: append([]string(nil), vh.Domains...),
		Routes: []*routev3.Route{{
			Match: prefixMatch("/"),
			Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
				Status: InactiveStatus,
				Body:   inlineString(inactiveBody(vh.TenantID)),
			}},
		}},
		TypedPerFilterConfig: perFilter,
	}, nil
}

func unknownVirtualHost(ir *IR, filters []httpFilter) (*routev3.VirtualHost, error) {
	perFilter, err := perFilterConfig(filters, func(f httpFilter) (proto.Message, error) { return f.unknownHostConfig(ir) })
	if err != nil {
		return nil, err
	}
	return &routev3.VirtualHost{
		Name:    UnknownHostName,
		Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Match: prefixMatch("/"),
			Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
				Status: 404,
				Body:   inlineString(wire.UnknownHostBody),
			}},
		}},
		TypedPerFilterConfig: perFilter,
	}, nil
}

// perFilterConfig collects the filters' per-virtual-host configs (keyed by
// filter name; protojson and the proto marshaller both sort map keys).
// authRouteParts are the parts every tenant's auth route has alike, made
// once and shared (as routeRetryPolicy: resources are never modified once
// built, and marshalling only reads them; at 100,000 tenants the copies
// were ~30 MB of the control plane's heap).
type authRouteParts struct {
	extAuthzOff *anypb.Any
	match       *routev3.RouteMatch
	timeout     *durationpb.Duration
}

var sharedAuthRoute = sync.OnceValues(func() (authRouteParts, error) {
	off, err := toAny(&extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true}})
	return authRouteParts{extAuthzOff: off, match: prefixMatch(wire.AuthPrefix), timeout: durationpb.New(AuthRouteTimeout)}, err
})

func perFilterConfig(filters []httpFilter, get func(httpFilter) (proto.Message, error)) (map[string]*anypb.Any, error) {
	var errs []error
	out := map[string]*anypb.Any{}
	for _, f := range filters {
		m, err := get(f)
		if err == nil && m != nil {
			var a *anypb.Any
			if a, err = toAny(m); err == nil {
				out[f.name()] = a
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("http filter %s: %w", f.name(), err))
		}
	}
	if len(out) == 0 {
		out = nil
	}
	return out, errors.Join(errs...)
}

func prefixMatch(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
}

func inlineString(s string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}
}
