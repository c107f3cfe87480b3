package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/proxy_protocol/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	xffv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/original_ip_detection/xff/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ProxyProtocolFilterName is the Envoy name of the PROXY protocol listener
// filter.
const ProxyProtocolFilterName = "envoy.filters.listener.proxy_protocol"

// XFFDetectionName is the Envoy name of the X-Forwarded-For original IP
// detection extension (trusted proxies by CIDR).
const XFFDetectionName = "envoy.http.original_ip_detection.xff"

// clientAddress decides which address is the client's: the connection's
// peer (the default: X-Forwarded-For is appended to, never believed), the
// one xff_num_trusted_hops entries from X-Forwarded-For's right, or the
// first one outside trusted_proxies read from its right when the peer is a
// trusted proxy. Every consumer of the address (RBAC's remote_ip, the
// remote_address rate-limit action, ext_authz's source, the access log)
// then sees the same one.
func clientAddress(h *hcmv3.HttpConnectionManager, s ListenerSettings) error {
	switch {
	case s.XFFNumTrustedHops > 0:
		h.XffNumTrustedHops = s.XFFNumTrustedHops
	case len(s.TrustedProxies) > 0:
		cidrs := &xffv3.XffTrustedCidrs{}
		for _, p := range s.TrustedProxies {
			cidrs.Cidrs = append(cidrs.Cidrs, &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))})
		}
		a, err := toAny(&xffv3.XffConfig{XffTrustedCidrs: cidrs})
		if err != nil {
			return err
		}
		// Envoy runs detection extensions only when it does not use the
		// remote address itself; the extension appends the peer to
		// X-Forwarded-For as use_remote_address would.
		h.UseRemoteAddress = wrapperspb.Bool(false)
		h.OriginalIpDetectionExtensions = []*corev3.TypedExtensionConfig{{Name: XFFDetectionName, TypedConfig: a}}
	}
	return nil
}

// proxyProtocol is the listener filter that requires a PROXY protocol
// header (v1 or v2) when s asks for it; none otherwise.
func proxyProtocol(s ListenerSettings) ([]*listenerv3.ListenerFilter, error) {
	if !s.ProxyProtocol {
		return nil, nil
	}
	a, err := toAny(&proxyprotocolv3.ProxyProtocol{})
	if err != nil {
		return nil, err
	}
	return []*listenerv3.ListenerFilter{{Name: ProxyProtocolFilterName, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: a}}}, nil
}
