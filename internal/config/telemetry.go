package config

import (
	"os"
	"strconv"
	"strings"
)

// Telemetry is distributed tracing (OpenTelemetry over OTLP/gRPC) for Envoy
// and every kailash component. Off when no endpoint is set here or in the
// standard OTEL_* variables. Envoy follows edits through xDS; the Go
// components read it at start (changes need a restart).
type Telemetry struct {
	// OTLPEndpoint is the OTLP/gRPC collector, http://host:port (plain
	// text) or https://host:port (TLS). Default:
	// $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else $OTEL_EXPORTER_OTLP_ENDPOINT;
	// none of them set (or OTEL_SDK_DISABLED=true, OTEL_TRACES_EXPORTER=none)
	// means tracing is off.
	OTLPEndpoint URL `yaml:"otlp_endpoint"`
	// CAFile verifies an https collector (default: the system roots; Envoy
	// reads /etc/ssl/certs/ca-certificates.crt).
	CAFile string `yaml:"ca_file"`
	// SamplingRatio is the share of new traces recorded, 0..1 (default: 1,
	// or $OTEL_TRACES_SAMPLER_ARG with a ratio sampler). Envoy decides for
	// each request it starts a trace for; the components follow the
	// caller's decision (parent based), so a trace is whole or absent.
	SamplingRatio *float64 `yaml:"sampling_ratio"`
	// ServiceName prefixes each component's service.name:
	// <service_name>-envoy, -authz, -ratelimit, -runner (default
	// $OTEL_SERVICE_NAME, else "kailash").
	ServiceName string `yaml:"service_name"`

	// endpointFrom names where OTLPEndpoint came from, for errors.
	endpointFrom string
}

// Tracing reports whether spans are exported.
func (t *Telemetry) Tracing() bool { return !t.OTLPEndpoint.IsZero() && t.OTLPEndpoint.Err() == nil }

// Ratio is the sampling ratio in force.
func (t *Telemetry) Ratio() float64 {
	if t.SamplingRatio == nil {
		return 1
	}
	return *t.SamplingRatio
}

// DefaultServiceName is telemetry.service_name when neither it nor
// OTEL_SERVICE_NAME is set.
const DefaultServiceName = "kailash"

func (c *Config) setTelemetryDefaults() {
	t := &c.Telemetry
	if t.OTLPEndpoint.IsZero() && !otelDisabled() {
		for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
			if v := strings.TrimSpace(os.Getenv(k)); v != "" {
				u, err := ParseURL(v)
				if err != nil {
					u = URL{}
					t.endpointFrom = k + " (" + err.Error() + ")"
				} else {
					t.endpointFrom = k
				}
				t.OTLPEndpoint = u
				break
			}
		}
	}
	if t.SamplingRatio == nil {
		switch os.Getenv("OTEL_TRACES_SAMPLER") {
		case "traceidratio", "parentbased_traceidratio":
			if r, err := strconv.ParseFloat(os.Getenv("OTEL_TRACES_SAMPLER_ARG"), 64); err == nil && r >= 0 && r <= 1 {
				t.SamplingRatio = &r
			}
		case "always_off", "parentbased_always_off":
			r := 0.0
			t.SamplingRatio = &r
		}
	}
	if t.ServiceName == "" {
		t.ServiceName = os.Getenv("OTEL_SERVICE_NAME")
	}
	if t.ServiceName == "" {
		t.ServiceName = DefaultServiceName
	}
}

// otelDisabled is the OpenTelemetry SDK's "off" switches.
func otelDisabled() bool {
	return strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") || os.Getenv("OTEL_TRACES_EXPORTER") == "none"
}

func (c *Config) validateTelemetry(at func(line int, format string, args ...any)) {
	t := &c.Telemetry
	if strings.Contains(t.endpointFrom, "(") {
		at(0, "telemetry.otlp_endpoint: from %s", t.endpointFrom)
	}
	if !t.OTLPEndpoint.IsZero() {
		field := "telemetry.otlp_endpoint"
		if t.endpointFrom != "" {
			field += " (from " + t.endpointFrom + ")"
		}
		u := t.OTLPEndpoint.URL()
		switch {
		case t.OTLPEndpoint.Err() != nil:
			at(t.OTLPEndpoint.Line(), "%s: %v", field, t.OTLPEndpoint.Err())
		case u.Scheme != "http" && u.Scheme != "https":
			at(t.OTLPEndpoint.Line(), "%s: %q: scheme must be http (plain text) or https (TLS)", field, t.OTLPEndpoint)
		case u.Port() == "":
			at(t.OTLPEndpoint.Line(), "%s: %q: give the port (OTLP/gRPC is usually 4317)", field, t.OTLPEndpoint)
		case u.Path != "" && u.Path != "/":
			at(t.OTLPEndpoint.Line(), "%s: %q: OTLP/gRPC takes no path", field, t.OTLPEndpoint)
		}
		if _, err := strconv.ParseUint(u.Port(), 10, 16); u.Port() != "" && err != nil {
			at(t.OTLPEndpoint.Line(), "%s: %q: bad port", field, t.OTLPEndpoint)
		}
	}
	if r := t.SamplingRatio; r != nil && (*r < 0 || *r > 1) {
		at(0, "telemetry.sampling_ratio: %v is outside 0..1", *r)
	}
	if t.CAFile != "" && t.OTLPEndpoint.Scheme() != "https" {
		at(0, "telemetry.ca_file: only used with an https otlp_endpoint")
	}
	if !ValidServiceName(t.ServiceName) {
		at(0, "telemetry.service_name: %q: use letters, digits, '.', '_' and '-'", t.ServiceName)
	}
}

// ValidServiceName is what telemetry.service_name accepts.
func ValidServiceName(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}
