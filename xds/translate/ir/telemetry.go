package ir

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"

	"github.com/kailash-gw/kailash/internal/config"
)

// Tracing is Envoy's OpenTelemetry tracer (config telemetry): spans go
// over OTLP/gRPC to Collector.
type Tracing struct {
	Collector Address
	// TLS, when set, is TLS to an https collector (no client certificate).
	TLS *UpstreamTLS
	// Percent of requests that start a trace when the client sent none.
	Percent float64
	// ServiceName is Envoy's service.name (<telemetry.service_name>-envoy).
	ServiceName string
}

// SystemCAFile is the CA bundle Envoy checks an https collector against
// when telemetry.ca_file is not set (Debian's and Alpine's path).
const SystemCAFile = "/etc/ssl/certs/ca-certificates.crt"

// buildTelemetry resolves telemetry, envoy.access_log and
// envoy.health_check_path.
func buildTelemetry(cfg *config.Config, ir *IR) []error {
	ir.AccessLogPath = cfg.AccessLogPath()
	ir.Explain = cfg.ExplainRecords() > 0
	ir.HealthCheckPath = cfg.HealthCheckPath()
	t := &cfg.Telemetry
	if !t.Tracing() {
		return nil
	}
	u := t.OTLPEndpoint.URL()
	port, err := strconv.ParseUint(u.Port(), 10, 16)
	if err != nil || port == 0 {
		return []error{fmt.Errorf("telemetry.otlp_endpoint: %q: bad port", t.OTLPEndpoint)}
	}
	tr := &Tracing{Collector: Address{Host: u.Hostname(), Port: uint32(port)}, Percent: t.Ratio() * 100, ServiceName: t.ServiceName + "-envoy"}
	if u.Scheme == "https" {
		ca := SystemCAFile
		if t.CAFile != "" {
			if ca, err = filepath.Abs(cfg.Path(t.CAFile)); err != nil {
				return []error{fmt.Errorf("telemetry.ca_file: %w", err)}
			}
		}
		tr.TLS = &UpstreamTLS{CAFile: ca, ServerName: u.Hostname()}
	}
	if net.ParseIP(tr.Collector.Host) == nil && tr.Collector.Host == "" {
		return []error{fmt.Errorf("telemetry.otlp_endpoint: %q: no host", t.OTLPEndpoint)}
	}
	ir.Tracing = tr
	return nil
}
