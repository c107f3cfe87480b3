package translate

import (
	"errors"
	"fmt"
	"slices"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	connectionlimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/connection_limit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	earlyheadermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/kailash-gw/kailash/internal/wire"
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
	hcmAny, err := connectionManager(ir, HCMStatPrefix, routes, chain, ir.HTTPListener)
	if err != nil {
		return nil, fmt.Errorf("listener %s: http connection manager: %w", ListenerName, err)
	}
	limit, err := connectionLimit(HCMStatPrefix, ir.HTTPListener)
	if err != nil {
		return nil, fmt.Errorf("listener %s: connection limit: %w", ListenerName, err)
	}
	l := &listenerv3.Listener{
		Name:    ListenerName,
		Address: socketAddress(ir.Listener),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{limit, {
				Name:       wellknown.HTTPConnectionManager,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcmAny},
			}},
		}},
	}
	if l.ListenerFilters, err = proxyProtocol(ir.HTTPListener); err != nil {
		return nil, fmt.Errorf("listener %s: %w", ListenerName, err)
	}
	if err := l.ValidateAll(); err != nil {
		return nil, fmt.Errorf("listener %s: %w", ListenerName, err)
	}
	out := []types.Resource{l}
	if !serving(ir) {
		return out, nil
	}
	tlsAny, err := connectionManager(ir, HTTPSStatPrefix, RouteConfigName, chain, ir.HTTPS.Settings)
	if err != nil {
		return nil, fmt.Errorf("listener %s: http connection manager: %w", HTTPSListenerName, err)
	}
	hl, err := httpsListener(ir, tlsAny)
	if err != nil {
		return nil, fmt.Errorf("listener %s: %w", HTTPSListenerName, err)
	}
	return append(out, hl), nil
}

// ConnectionLimitFilterName is the Envoy name of the connection limit
// network filter.
const ConnectionLimitFilterName = "envoy.filters.network.connection_limit"

// connectionLimit is the network filter, first in a filter chain, that
// closes new connections once s.MaxConnections are open on the chain.
// The plain listener has one chain, so the cap is the listener's; the HTTPS
// listener has one chain per tenant certificate, so there it caps each
// tenant's TLS connections. (Envoy's overload manager, in the bootstrap,
// caps all connections together.)
func connectionLimit(statPrefix string, s ListenerSettings) (*listenerv3.Filter, error) {
	a, err := toAny(&connectionlimitv3.ConnectionLimit{
		StatPrefix:     statPrefix,
		MaxConnections: wrapperspb.UInt64(uint64(s.MaxConnections)),
	})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Filter{Name: ConnectionLimitFilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}, nil
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
// listeners run the same filters (the compressor only where s enables it),
// each with its own connection settings s.
//
// Before routing and before any filter, Envoy removes every x-kailash-*
// header the client sent (early header mutation): only ext_authz and the
// routes set them, so no filter (the rate-limit descriptors, a route match)
// and no upstream can mistake a client's copy for ours. Headers with
// underscores are refused (400): x_kailash_user would otherwise pass the
// removal and reach upstreams that fold '_' into '-' (CGI, WSGI, PHP).
func connectionManager(ir *IR, statPrefix, routes string, chain []*hcmv3.HttpFilter, s ListenerSettings) (*anypb.Any, error) {
	strip, err := toAny(&earlyheadermutationv3.HeaderMutation{Mutations: []*mutationrulesv3.HeaderMutation{{
		Action: &mutationrulesv3.HeaderMutation_RemoveOnMatch_{RemoveOnMatch: &mutationrulesv3.HeaderMutation_RemoveOnMatch{
			KeyMatcher: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: wire.HeaderPrefix},
				IgnoreCase:   true,
			},
		}},
	}}})
	if err != nil {
		return nil, err
	}
	if !s.Compression {
		chain = slices.DeleteFunc(slices.Clone(chain), func(f *hcmv3.HttpFilter) bool { return f.Name == CompressorFilterName })
	}
	h := &hcmv3.HttpConnectionManager{
		StatPrefix:       statPrefix,
		CodecType:        hcmv3.HttpConnectionManager_AUTO,
		StripPortMode:    &hcmv3.HttpConnectionManager_StripAnyHostPort{StripAnyHostPort: true},
		UseRemoteAddress: wrapperspb.Bool(true),
		// Paths as the upstreams will read them, before any route, RBAC or
		// ext_authz decision: /a/./b, /a/../b and //a are normalized, and
		// %2F or %5C in a path are unescaped and redirected, so no route
		// prefix (/auth/) or policy path match can be sidestepped.
		NormalizePath:                wrapperspb.Bool(true),
		MergeSlashes:                 true,
		PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: routes,
		}},
		HttpFilters: chain,
		EarlyHeaderMutationExtensions: []*corev3.TypedExtensionConfig{{
			Name:        EarlyHeaderMutationName,
			TypedConfig: strip,
		}},
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{
			IdleTimeout:                  durationpb.New(s.IdleTimeout),
			HeadersWithUnderscoresAction: corev3.HttpProtocolOptions_REJECT_REQUEST,
		},
		Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
			MaxConcurrentStreams:        wrapperspb.UInt32(s.MaxConcurrentStreams),
			InitialStreamWindowSize:     wrapperspb.UInt32(65536),   // 64 KiB
			InitialConnectionWindowSize: wrapperspb.UInt32(1048576), // 1 MiB
		},
		StreamIdleTimeout:     durationpb.New(s.StreamIdleTimeout),
		RequestHeadersTimeout: durationpb.New(s.RequestHeadersTimeout),
		RequestTimeout:        durationpb.New(s.RequestTimeout),
	}
	if err := clientAddress(h, s); err != nil {
		return nil, err
	}
	if h.Tracing, err = tracing(ir); err != nil {
		return nil, err
	}
	if h.AccessLog, err = accessLogs(ir); err != nil {
		return nil, err
	}
	// The client can quote x-request-id (kailash explain, support tickets).
	h.AlwaysSetRequestIdInResponse = true
	if ir.PerTenant {
		h.RouteSpecifier = scopedRoutes()
		h.LocalReplyConfig = unknownHostReply()
	}
	return toAny(h)
}

// EarlyHeaderMutationName is the Envoy name of the early header mutation
// extension that removes the client's x-kailash-* headers.
const EarlyHeaderMutationName = "envoy.http.early_header_mutation.header_mutation"

// unknownHostReply gives Envoy's own "no route" answer (a host no scope
// names, in per-tenant mode) the catch-all virtual host's status and body.
func unknownHostReply() *hcmv3.LocalReplyConfig {
	return &hcmv3.LocalReplyConfig{Mappers: []*hcmv3.ResponseMapper{{
		Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ResponseFlagFilter{
			ResponseFlagFilter: &accesslogv3.ResponseFlagFilter{Flags: []string{"NR"}},
		}},
		StatusCode: wrapperspb.UInt32(404),
		Body:       inlineString(wire.UnknownHostBody),
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
