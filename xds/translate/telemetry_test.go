package translate

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"

	"github.com/kailash-gw/kailash/internal/config"
)

func otlpCluster(res *Resources) *clusterv3.Cluster {
	for _, r := range res.Clusters {
		if c := r.(*clusterv3.Cluster); c.Name == OTLPCluster {
			return c
		}
	}
	return nil
}

// Tracing off (the default): no tracer, no collector cluster. On: the
// OpenTelemetry tracer sends to kailash_otlp at the configured ratio, with
// service name <service_name>-envoy. envoy.access_log off: no access log.
func TestTelemetryShape(t *testing.T) {
	c := validConfig()
	res, err := Translate(c)
	if err != nil {
		t.Fatal(err)
	}
	hcm, _ := listenerHCM(t, res.Listeners[0].(*listenerv3.Listener), 0)
	if hcm.Tracing != nil || otlpCluster(res) != nil {
		t.Errorf("tracing off: tracing %v, otlp cluster %v", hcm.Tracing, otlpCluster(res))
	}
	// The explain log to authz (answers >= 400), then the JSON access log.
	if len(hcm.AccessLog) != 2 || hcm.AccessLog[0].Name != "envoy.access_loggers.http_grpc" || hcm.AccessLog[1].Name != "envoy.access_loggers.stdout" || !hcm.AlwaysSetRequestIdInResponse {
		t.Errorf("access log (default stdout) %v; always_set_request_id_in_response %v", hcm.AccessLog, hcm.AlwaysSetRequestIdInResponse)
	}

	c = validConfig()
	ratio := 0.25
	c.Telemetry = config.Telemetry{SamplingRatio: &ratio, ServiceName: "edge"}
	if c.Telemetry.OTLPEndpoint, err = config.ParseURL("http://127.0.0.1:4317"); err != nil {
		t.Fatal(err)
	}
	c.Envoy.AccessLog = config.AccessLogOff
	zero := 0
	c.Authz.Explain.Records = &zero
	if res, err = Translate(c); err != nil {
		t.Fatal(err)
	}
	hcm, _ = listenerHCM(t, res.Listeners[0].(*listenerv3.Listener), 0)
	if len(hcm.AccessLog) != 0 {
		t.Errorf("access_log off and authz.explain.records 0: %v", hcm.AccessLog)
	}
	if hcm.Tracing == nil || hcm.Tracing.GetRandomSampling().GetValue() != 25 {
		t.Fatalf("tracing %v, want 25%% random sampling", hcm.Tracing)
	}
	otel := &tracev3.OpenTelemetryConfig{}
	if err := hcm.Tracing.GetProvider().GetTypedConfig().UnmarshalTo(otel); err != nil {
		t.Fatal(err)
	}
	if otel.ServiceName != "edge-envoy" || otel.GetGrpcService().GetEnvoyGrpc().GetClusterName() != OTLPCluster {
		t.Errorf("opentelemetry tracer %v", otel)
	}
	cl := otlpCluster(res)
	if cl == nil {
		t.Fatal("no otlp cluster")
	}
	if cl.TransportSocket != nil {
		t.Errorf("http collector got a TLS socket: %v", cl.TransportSocket)
	}
	addr := cl.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if addr.GetAddress() != "127.0.0.1" || addr.GetPortValue() != 4317 {
		t.Errorf("otlp cluster address %v", addr)
	}
}
