package ir

import (
	"fmt"
	"path/filepath"

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
