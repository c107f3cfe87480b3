package config

import (
	"path/filepath"
	"strings"
	"testing"
)

func telemetryBody(telemetry string) string {
	return telemetry + hardeningHead + "tenants:\n" + hardeningTenant("acme", "")
}

// clearOTEL unsets the OTEL_* variables the defaults read.
func clearOTEL(t *testing.T) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SDK_DISABLED",
		"OTEL_TRACES_EXPORTER", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_SERVICE_NAME"} {
		t.Setenv(k, "")
	}
}

func TestTelemetryOffByDefault(t *testing.T) {
	clearOTEL(t)
	c, err := loadString(t, telemetryBody(""))
	if err != nil {
		t.Fatal(err)
	}
	if c.Telemetry.Tracing() || c.Telemetry.ServiceName != DefaultServiceName || c.Telemetry.Ratio() != 1 {
		t.Errorf("defaults: tracing=%v service=%q ratio=%v", c.Telemetry.Tracing(), c.Telemetry.ServiceName, c.Telemetry.Ratio())
	}
	if c.AccessLogPath() != "/dev/stdout" {
		t.Errorf("access log default %q, want /dev/stdout", c.AccessLogPath())
	}
	for v, want := range map[string]string{"off": "", "stderr": "/dev/stderr", "logs/access.log": filepath.Join(filepath.Dir(c.File), "logs/access.log")} {
		c, err := loadString(t, strings.Replace(telemetryBody(""), "envoy: {listen: 127.0.0.1:1}", "envoy: {listen: 127.0.0.1:1, access_log: "+v+"}", 1))
		if err != nil {
			t.Fatal(err)
		}
		if want != "" {
			want = filepath.Join(filepath.Dir(c.File), "logs/access.log")
			if v == "stderr" {
				want = "/dev/stderr"
			}
		}
		if got := c.AccessLogPath(); got != want {
			t.Errorf("envoy.access_log %s: path %q, want %q", v, got, want)
		}
	}
}

func TestTelemetryFromOTELEnvironment(t *testing.T) {
	clearOTEL(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
	t.Setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
	t.Setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
	t.Setenv("OTEL_SERVICE_NAME", "edge")
	c, err := loadString(t, telemetryBody(""))
	if err != nil {
		t.Fatal(err)
	}
	tc := c.Telemetry
	if !tc.Tracing() || tc.OTLPEndpoint.String() != "http://collector:4317" || tc.Ratio() != 0.25 || tc.ServiceName != "edge" {
		t.Errorf("from OTEL_*: tracing=%v endpoint=%s ratio=%v service=%q", tc.Tracing(), tc.OTLPEndpoint, tc.Ratio(), tc.ServiceName)
	}

	// The file wins over the environment; the traces-specific variable
	// over the general one; OTEL_SDK_DISABLED turns the default off.
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces:4317")
	c, err = loadString(t, telemetryBody("telemetry: {sampling_ratio: 0.5, service_name: gw}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Telemetry.OTLPEndpoint.String() != "https://traces:4317" || c.Telemetry.Ratio() != 0.5 || c.Telemetry.ServiceName != "gw" {
		t.Errorf("file over env: %+v", c.Telemetry)
	}
	t.Setenv("OTEL_SDK_DISABLED", "true")
	if c, err = loadString(t, telemetryBody("")); err != nil || c.Telemetry.Tracing() {
		t.Errorf("OTEL_SDK_DISABLED=true: tracing=%v err=%v", c != nil && c.Telemetry.Tracing(), err)
	}
}

func TestTelemetryErrors(t *testing.T) {
	clearOTEL(t)
	for _, tc := range []struct{ body, want string }{
		{"telemetry: {otlp_endpoint: 'grpc://c:4317'}\n", "telemetry.otlp_endpoint: \"grpc://c:4317\": scheme must be http"},
		{"telemetry: {otlp_endpoint: 'http://c'}\n", "give the port"},
		{"telemetry: {otlp_endpoint: 'http://c:4317/v1/traces'}\n", "OTLP/gRPC takes no path"},
		{"telemetry: {otlp_endpoint: 'http://c:4317', sampling_ratio: 1.5}\n", "telemetry.sampling_ratio: 1.5 is outside 0..1"},
		{"telemetry: {otlp_endpoint: 'http://c:4317', ca_file: ca.pem}\n", "telemetry.ca_file: only used with an https otlp_endpoint"},
		{"telemetry: {service_name: 'my service'}\n", "telemetry.service_name: \"my service\""},
	} {
		_, err := loadString(t, telemetryBody(tc.body))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.body, err, tc.want)
		}
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")
	if _, err := loadString(t, telemetryBody("")); err == nil || !strings.Contains(err.Error(), "from OTEL_EXPORTER_OTLP_ENDPOINT") {
		t.Errorf("bad OTEL_EXPORTER_OTLP_ENDPOINT: err = %v, want it named", err)
	}
}
