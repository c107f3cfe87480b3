package translate

import (
	"errors"
	"fmt"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// buildListeners is the plain HTTP listener and, when tls.listen is set and
// some tenant has a certificate, the HTTPS listener (sorted by name).
func buildListeners(ir *IR, filters []httpFilter) ([]types.Resource, error) {
	chain, err := httpFilterChain(ir, filters)
	if err != nil {
		return nil, fmt.Errorf("listener %s: %w", ListenerName, err)
	}
	routes := RouteConfigName
	if redirecting(ir) {
		routes = RedirectRouteConfigName
	}
	hcmAny, err := connectionManager(ir, HCMStatPrefix, routes, chain)
	if err != nil {
		return nil, fmt.Errorf("listener %s: http connection manager: %w", ListenerName, err)
	}
	l := &listenerv3.Listener{
		Name:    ListenerName,
		Address: socketAddress(ir.Listener),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       wellknown.HTTPConnectionManager,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcmAny},
			}},
		}},
	}
	if err := l.ValidateAll(); err != nil {
		return nil, fmt.Errorf("listener %s: %w", ListenerName, err)
	}
	out := []types.Resource{l}
	if !serving(ir) {
		return out, nil
	}
	tlsAny, err := connectionManager(ir, HTTPSStatPrefix, RouteConfigName, chain)
	if err != nil {
		return nil, fmt.Errorf("listener %s: http connection manager: %w", HTTPSListenerName, err)
	}
	hl, err := httpsListener(ir, tlsAny)
	if err != nil {
		return nil, fmt.Errorf("listener %s: %w", HTTPSListenerName, err)
	}
	return append(out, hl), nil
}

// httpFilterChain is the HCM's HTTP filters in httpFilters order.
func httpFilterChain(ir *IR, filters []httpFilter) ([]*hcmv3.HttpFilter, error) {
	var errs []error
	var chain []*hcmv3.HttpFilter
	for _, f := range filters {
		cfg, err := f.listenerConfig(ir)
		if err != nil {
			errs = append(errs, fmt.Errorf("http filter %s: %w", f.name(), err))
			continue
		}
		if cfg == nil {
			continue
		}
		a, err := toAny(cfg)
		if err != nil {
			errs = append(errs, fmt.Errorf("http filter %s: %w", f.name(), err))
			continue
		}
		chain = append(chain, &hcmv3.HttpFilter{
			Name:       f.name(),
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a},
			// No filter is disabled by default: Envoy decides that when
			// the stream starts, from the route of the host as sent, and a
			// filter that changes the host (hostCaseFilter) would then
			// bypass it. ext_authz runs unless the route in force when it
			// runs turns it off.
		})
	}
	return chain, errors.Join(errs...)
}

// connectionManager is an HCM that fetches the route configuration routes
// over ADS (or, in per-tenant mode, the scoped routes) and runs chain. Both
// listeners run the same filters.
func connectionManager(ir *IR, statPrefix, routes string, chain []*hcmv3.HttpFilter) (*anypb.Any, error) {
	h := &hcmv3.HttpConnectionManager{
		StatPrefix:       statPrefix,
		CodecType:        hcmv3.HttpConnectionManager_AUTO,
		StripPortMode:    &hcmv3.HttpConnectionManager_StripAnyHostPort{StripAnyHostPort: true},
		UseRemoteAddress: wrapperspb.Bool(true),
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: routes,
		}},
		HttpFilters: chain,
	}
	if ir.PerTenant {
		h.RouteSpecifier = scopedRoutes()
		h.LocalReplyConfig = unknownHostReply()
	}
	return toAny(h)
}

// unknownHostReply gives Envoy's own "no route" answer (a host no scope
// names, in per-tenant mode) the catch-all virtual host's status and body.
func unknownHostReply() *hcmv3.LocalReplyConfig {
	return &hcmv3.LocalReplyConfig{Mappers: []*hcmv3.ResponseMapper{{
		Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ResponseFlagFilter{
			ResponseFlagFilter: &accesslogv3.ResponseFlagFilter{Flags: []string{"NR"}},
		}},
		StatusCode: wrapperspb.UInt32(404),
		Body:       inlineString(UnknownHostBody),
	}}}
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

func socketAddress(a Address) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       a.Host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: a.Port},
	}}}
}
