package translate

import (
	"fmt"
	"net"
	"path/filepath"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/kailash-gw/kailash/internal/config"
)

// UpstreamTLS is mutual TLS from Envoy to one of our gRPC services: the
// client certificate Envoy presents and the CA and name it checks the
// service's certificate against. Only paths on Envoy's host are sent; the
// key itself never travels over xDS.
type UpstreamTLS struct {
	CertFile, KeyFile, CAFile string // absolute
	// ServerName must be a SAN of the service's certificate (DNS or IP);
	// a DNS name is also sent as SNI.
	ServerName string
}

// buildUpstreamTLS resolves envoy.authz_tls and envoy.ratelimit_tls.
func buildUpstreamTLS(cfg *config.Config, ir *IR) []error {
	var errs []error
	resolve := func(field string, t config.ClientTLS, host string) *UpstreamTLS {
		if !t.Enabled() {
			return nil
		}
		u := &UpstreamTLS{ServerName: t.ServerName}
		if u.ServerName == "" {
			u.ServerName = host
		}
		for _, f := range []struct {
			name string
			dst  *string
			v    string
		}{{"cert_file", &u.CertFile, t.CertFile}, {"key_file", &u.KeyFile, t.KeyFile}, {"ca_file", &u.CAFile, t.CAFile}} {
			if f.v == "" {
				errs = append(errs, fmt.Errorf("%s.%s: required", field, f.name))
				continue
			}
			abs, err := filepath.Abs(cfg.Path(f.v))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.%s: %w", field, f.name, err))
			}
			*f.dst = abs
		}
		return u
	}
	ir.AuthzTLS = resolve("envoy.authz_tls", cfg.Envoy.AuthzTLS, ir.Authz.Address.Host)
	if ir.RateLimit != nil {
		ir.RateLimitTLS = resolve("envoy.ratelimit_tls", cfg.Envoy.RateLimitTLS, ir.RateLimit.Address.Host)
	} else if cfg.Envoy.RateLimitTLS.Enabled() {
		errs = append(errs, fmt.Errorf("envoy.ratelimit_tls: needs ratelimit.grpc"))
	}
	return errs
}

// transportSocket is u as an Envoy UpstreamTlsContext: TLS 1.3, ALPN h2
// (the services are gRPC), the client certificate by file name, the
// server's certificate checked against the CA and ServerName.
func (u *UpstreamTLS) transportSocket() (*corev3.TransportSocket, error) {
	sanType := tlsv3.SubjectAltNameMatcher_DNS
	sni := u.ServerName
	if net.ParseIP(u.ServerName) != nil {
		sanType, sni = tlsv3.SubjectAltNameMatcher_IP_ADDRESS, ""
	}
	file := func(p string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: p}}
	}
	ctx := &tlsv3.UpstreamTlsContext{
		Sni: sni,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			// Envoy clients stop at TLS 1.2 unless told otherwise.
			TlsParams:     &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
			AlpnProtocols: []string{"h2"},
			TlsCertificates: []*tlsv3.TlsCertificate{{
				CertificateChain: file(u.CertFile),
				PrivateKey:       file(u.KeyFile),
			}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: file(u.CAFile),
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
					SanType: sanType,
					Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: u.ServerName}},
				}},
			}},
		},
	}
	a, err := toAny(ctx)
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}, nil
}
