package translate

import (
	"errors"
	"fmt"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// ALPN offered on the HTTPS listener (the HCM's codec is AUTO).
var alpn = []string{"h2", "http/1.1"}

// serving reports whether the HTTPS listener exists: tls.listen is set and
// some tenant has a certificate (a listener without filter chains would
// refuse every connection, and Envoy rejects it).
func serving(ir *IR) bool {
	if ir.HTTPS == nil {
		return false
	}
	for i := range ir.VirtualHosts {
		if ir.VirtualHosts[i].TLS != nil {
			return true
		}
	}
	return false
}

// redirecting reports whether the plain listener redirects tenants with a
// certificate to HTTPS.
func redirecting(ir *IR) bool { return serving(ir) && ir.HTTPS.RedirectHTTP }

// httpsListener has one filter chain per tenant with a certificate, chosen
// by SNI (the TLS inspector reads it), each terminating TLS with the
// tenant's certificate from SDS and running the same connection manager
// (hcm) as the plain listener. A client naming no tenant's domain gets no
// chain: the handshake fails.
func httpsListener(ir *IR, hcm *anypb.Any) (*listenerv3.Listener, error) {
	inspector, err := toAny(&tlsinspectorv3.TlsInspector{})
	if err != nil {
		return nil, err
	}
	minVersion := tlsv3.TlsParameters_TLSv1_2
	if ir.HTTPS.MinTLS13 {
		minVersion = tlsv3.TlsParameters_TLSv1_3
	}
	l := &listenerv3.Listener{
		Name:    HTTPSListenerName,
		Address: socketAddress(ir.HTTPS.Listener),
	}
	// The PROXY protocol header comes before the TLS handshake.
	if l.ListenerFilters, err = proxyProtocol(ir.HTTPS.Settings); err != nil {
		return nil, err
	}
	l.ListenerFilters = append(l.ListenerFilters, &listenerv3.ListenerFilter{
		Name:       wellknown.TlsInspector,
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: inspector},
	})
	var errs []error
	for i := range ir.VirtualHosts {
		vh := &ir.VirtualHosts[i]
		if vh.TLS == nil {
			continue
		}
		dtc := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams: &tlsv3.TlsParameters{
				TlsMinimumProtocolVersion: minVersion,
				TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
			},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{
				Name:      vh.TLS.SecretName,
				SdsConfig: adsSource(),
			}},
			AlpnProtocols: slices.Clone(alpn),
		}}
		if ca := vh.TLS.ClientCA; ca != nil {
			// Client certificates: asked for, verified against the
			// tenant's CAs (authz verifies them again, for the route's
			// tenant), required when the tenant says so.
			dtc.RequireClientCertificate = wrapperspb.Bool(vh.TLS.RequireClientCert)
			dtc.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: ca}},
			}}
		}
		ts, err := toAny(dtc)
		if err != nil {
			errs = append(errs, fmt.Errorf("tenant %q: %w", vh.TenantID, err))
			continue
		}
		limit, err := connectionLimit(HTTPSStatPrefix+"_"+vh.Name(), ir.HTTPS.Settings)
		if err != nil {
			errs = append(errs, fmt.Errorf("tenant %q: connection limit: %w", vh.TenantID, err))
			continue
		}
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			Name:             vh.Name(),
			FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: slices.Clone(vh.TLS.ServerNames)},
			Filters: []*listenerv3.Filter{limit, {
				Name:       wellknown.HTTPConnectionManager,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
			}},
			TransportSocket: &corev3.TransportSocket{
				Name:       wellknown.TransportSocketTls,
				ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: ts},
			},
		})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := l.ValidateAll(); err != nil {
		return nil, err
	}
	return l, nil
}

// buildSecrets is one SDS secret per tenant certificate referenced by the
// HTTPS listener, in tenant order (secret names follow tenant ids).
func buildSecrets(ir *IR) ([]types.Resource, error) {
	if !serving(ir) {
		return nil, nil
	}
	var out []types.Resource
	var errs []error
	for i := range ir.VirtualHosts {
		c := ir.VirtualHosts[i].TLS
		if c == nil {
			continue
		}
		s := &tlsv3.Secret{Name: c.SecretName, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: c.CertPEM}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: c.KeyPEM}},
		}}}
		if err := s.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("secret %s: %w", c.SecretName, err))
			continue
		}
		out = append(out, s)
	}
	return out, errors.Join(errs...)
}

// redirectVirtualHost answers every plain-HTTP request of a tenant with a
// certificate with 301 to the same host and path over HTTPS. No filter does
// anything (the same per-filter configs as the unknown host): the request
// is checked when it comes back over TLS.
func redirectVirtualHost(ir *IR, vh *VirtualHost, filters []httpFilter) (*routev3.VirtualHost, error) {
	perFilter, err := perFilterConfig(filters, func(f httpFilter) (proto.Message, error) { return f.unknownHostConfig(ir) })
	if err != nil {
		return nil, err
	}
	rd, err := redirectRoute(ir, nil)
	if err != nil {
		return nil, err
	}
	return &routev3.VirtualHost{
		Name:                 vh.Name(),
		Domains:              append([]string(nil), vh.Domains...),
		Routes:               []*routev3.Route{rd},
		TypedPerFilterConfig: perFilter,
	}, nil
}

// redirectRoute answers 301 to the same host and path over HTTPS (on the
// TLS listener's port when it is not 443). With filters, the route carries
// their unknown-host configs (ext_authz off): the request is checked when it
// comes back over TLS.
func redirectRoute(ir *IR, filters []httpFilter) (*routev3.Route, error) {
	perFilter, err := perFilterConfig(filters, func(f httpFilter) (proto.Message, error) { return f.unknownHostConfig(ir) })
	if err != nil {
		return nil, err
	}
	rd := &routev3.RedirectAction{
		SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true},
		ResponseCode:           routev3.RedirectAction_MOVED_PERMANENTLY,
	}
	if p := ir.HTTPS.RedirectPort(); p != 0 {
		rd.PortRedirect = p
	}
	return &routev3.Route{
		Match:                prefixMatch("/"),
		Action:               &routev3.Route_Redirect{Redirect: rd},
		TypedPerFilterConfig: perFilter,
	}, nil
}
