package translate

import (
	"google.golang.org/protobuf/proto"
)

// httpFilter is one HTTP filter of the listener's connection manager. Each
// lives in its own file (filter_*.go); httpFilters fixes their order.
type httpFilter interface {
	// name is the Envoy filter name, also the key of typed_per_filter_config.
	name() string
	// listenerConfig is the filter's typed_config in the HCM, or nil when ir
	// does not enable the filter (it is then left out of the chain).
	listenerConfig(ir *IR) (proto.Message, error)
	// tenantConfig is the filter's per-virtual-host config for a tenant (nil:
	// none).
	tenantConfig(ir *IR, vh *VirtualHost) (proto.Message, error)
	// unknownHostConfig is the per-virtual-host config for the catch-all
	// virtual host that answers unknown hosts (nil: none).
	unknownHostConfig(ir *IR) (proto.Message, error)
}

// httpFilters returns the HTTP filters in chain order. The order is part of
// the output: changing it changes the listener and makes Envoy drain
// connections, so new filters go in their designed place once and stay:
//
//	(health_check) · (lua) · rbac · cors · ext_authz · local_ratelimit · (ratelimit) · compressor · router
//
// health_check, unless envoy.health_check_path is off, answers the probe
// path before anything else looks at the request (filter_healthcheck.go).
// lua, with per-tenant routes only, lowercases the host before the scope
// (the tenant's route configuration) is chosen.
// rbac (the IP allowlist) is first so nothing else, not even a CORS
// preflight answer or an ext_authz call, happens for a refused client.
// local_ratelimit and ratelimit follow ext_authz: ratelimit needs the
// identity ext_authz found. Filters without per-tenant config are still in
// the chain (doing nothing), so that the first tenant to use one does not
// change the listener; only ratelimit depends on ratelimit.grpc being set.
// router must stay last.
func httpFilters() []httpFilter {
	return []httpFilter{
		healthCheckFilter{},
		hostCaseFilter{},
		clientAddressFilter{},
		rbacFilter{},
		corsFilter{},
		extAuthzFilter{},
		localRateLimitFilter{},
		rateLimitFilter{},
		compressorFilter{},
		routerFilter{},
	}
}

// noPerVirtualHost is embedded by filters without per-virtual-host config.
type noPerVirtualHost struct{}

func (noPerVirtualHost) tenantConfig(*IR, *VirtualHost) (proto.Message, error) { return nil, nil }
func (noPerVirtualHost) unknownHostConfig(*IR) (proto.Message, error)          { return nil, nil }
