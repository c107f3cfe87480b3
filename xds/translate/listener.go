package translate

import (
	"errors"
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// buildListener is the one HTTP listener: a connection manager that fetches
// its routes over ADS and runs the HTTP filters in httpFilters order.
func buildListener(ir *IR, filters []httpFilter) (*listenerv3.Listener, error) {
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
		})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix:       HCMStatPrefix,
		CodecType:        hcmv3.HttpConnectionManager_AUTO,
		StripPortMode:    &hcmv3.HttpConnectionManager_StripAnyHostPort{StripAnyHostPort: true},
		UseRemoteAddress: wrapperspb.Bool(true),
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
				ResourceApiVersion:    corev3.ApiVersion_V3,
			},
			RouteConfigName: RouteConfigName,
		}},
		HttpFilters: chain,
	}
	hcmAny, err := toAny(hcm)
	if err != nil {
		return nil, fmt.Errorf("http connection manager: %w", err)
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
		return nil, err
	}
	return l, nil
}

func socketAddress(a Address) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       a.Host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: a.Port},
	}}}
}
