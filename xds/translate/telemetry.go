package translate

import (
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	grpcalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/kailash-gw/kailash/internal/wire"
)

// OTLPCluster is the OpenTelemetry collector Envoy exports its spans to.
const OTLPCluster = "kailash_otlp"

// AccessLogFields are the keys of each JSON access log line and the Envoy
// command operator each one holds. request_id is the x-request-id Envoy
// made for the request (a client's own is replaced at the edge), the one
// the runner and ext_authz log too; trace_id joins the line to the trace;
// tenant and decision_id are what ext_authz decided (empty when it did not
// run). path is without its query string: queries carry tokens.
var AccessLogFields = map[string]string{
	"time":                  "%START_TIME%",
	"request_id":            "%REQ(X-REQUEST-ID)%",
	"trace_id":              "%TRACE_ID%",
	"tenant":                "%DYNAMIC_METADATA(" + wire.MetadataNamespace + ":" + wire.MetadataTenant + ")%",
	"decision_id":           "%DYNAMIC_METADATA(" + wire.MetadataNamespace + ":" + wire.MetadataDecisionID + ")%",
	"user":                  "%DYNAMIC_METADATA(" + wire.MetadataNamespace + ":" + wire.MetadataUser + ")%",
	"method":                "%REQ(:METHOD)%",
	"authority":             "%REQ(:AUTHORITY)%",
	"path":                  "%PATH(WQ:ORIG_OR_PATH)%",
	"protocol":              "%PROTOCOL%",
	"status":                "%RESPONSE_CODE%",
	"response_flags":        "%RESPONSE_FLAGS%",
	"response_code_details": "%RESPONSE_CODE_DETAILS%",
	"bytes_received":        "%BYTES_RECEIVED%",
	"bytes_sent":            "%BYTES_SENT%",
	"duration_ms":           "%DURATION%",
	"upstream_cluster":      "%UPSTREAM_CLUSTER%",
	"upstream_host":         "%UPSTREAM_HOST%",
	"client_ip":             "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
	"user_agent":            "%REQ(USER-AGENT)%",
}

// ExplainLogName is the log_name of the gRPC access log that reports
// Envoy's answers of 400 and above to authz (kailash explain's edge step);
// authz takes only this log.
const ExplainLogName = "kailash_explain"

// accessLogs is the listener's JSON access log (envoy.access_log; none when
// it is off), and the explain log to authz.
func accessLogs(ir *IR) ([]*accesslogv3.AccessLog, error) {
	var out []*accesslogv3.AccessLog
	if ir.Explain {
		a, err := toAny(&grpcalsv3.HttpGrpcAccessLogConfig{CommonConfig: &grpcalsv3.CommonGrpcAccessLogConfig{
			LogName: ExplainLogName,
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
				ClusterName: AuthzCluster,
			}}},
			TransportApiVersion: corev3.ApiVersion_V3,
			BufferFlushInterval: durationpb.New(250 * time.Millisecond),
		}})
		if err != nil {
			return nil, err
		}
		refused := &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{StatusCodeFilter: &accesslogv3.StatusCodeFilter{
			Comparison: &accesslogv3.ComparisonFilter{Op: accesslogv3.ComparisonFilter_GE, Value: &corev3.RuntimeUInt32{DefaultValue: 400, RuntimeKey: "kailash.explain_min_status"}},
		}}}
		if ir.HealthCheckPath != "" {
			// A draining Envoy's 503s to health checks refuse no one.
			refused = &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_AndFilter{AndFilter: &accesslogv3.AndFilter{
				Filters: []*accesslogv3.AccessLogFilter{refused, notHealthCheck()},
			}}}
		}
		out = append(out, &accesslogv3.AccessLog{
			Name:       "envoy.access_loggers.http_grpc",
			Filter:     refused,
			ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: a},
		})
	}
	if ir.AccessLogPath == "" {
		return out, nil
	}
	fields := make(map[string]any, len(AccessLogFields))
	for k, v := range AccessLogFields {
		fields[k] = v
	}
	js, err := structpb.NewStruct(fields)
	if err != nil {
		return nil, err
	}
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: js}}
	// Envoy's own stdout and stderr are the stream loggers': opening
	// /dev/stdout as a file fails where the process may not open its
	// descriptors by path (a container's non-root user, some pipes).
	var name string
	var cfg proto.Message
	switch ir.AccessLogPath {
	case "/dev/stdout":
		name, cfg = "envoy.access_loggers.stdout", &streamv3.StdoutAccessLog{AccessLogFormat: &streamv3.StdoutAccessLog_LogFormat{LogFormat: format}}
	case "/dev/stderr":
		name, cfg = "envoy.access_loggers.stderr", &streamv3.StderrAccessLog{AccessLogFormat: &streamv3.StderrAccessLog_LogFormat{LogFormat: format}}
	default:
		name, cfg = "envoy.access_loggers.file", &filev3.FileAccessLog{Path: ir.AccessLogPath, AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: format}}
	}
	a, err := toAny(cfg)
	if err != nil {
		return nil, err
	}
	al := &accesslogv3.AccessLog{Name: name, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: a}}
	if ir.HealthCheckPath != "" {
		// Probes every few seconds from each load balancer and kubelet
		// would drown the requests.
		al.Filter = notHealthCheck()
	}
	return append(out, al), nil
}

// notHealthCheck leaves out the requests the health check filter answered.
func notHealthCheck() *accesslogv3.AccessLogFilter {
	return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_NotHealthCheckFilter{NotHealthCheckFilter: &accesslogv3.NotHealthCheckFilter{}}}
}

// tracing is the connection manager's OpenTelemetry tracer (nil when
// telemetry is off). Envoy starts (or continues, from the client's
// traceparent) the trace, samples new ones at ir.Tracing.Percent, and
// passes W3C traceparent to ext_authz, the rate-limit service and the
// upstream, each call its own child span.
func tracing(ir *IR) (*hcmv3.HttpConnectionManager_Tracing, error) {
	t := ir.Tracing
	if t == nil {
		return nil, nil
	}
	otel, err := toAny(&tracev3.OpenTelemetryConfig{
		GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: OTLPCluster}},
			Timeout:         durationpb.New(5 * time.Second),
		},
		ServiceName: t.ServiceName,
	})
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpConnectionManager_Tracing{
		RandomSampling: &typev3.Percent{Value: t.Percent},
		Provider: &tracev3.Tracing_Http{
			Name:       "envoy.tracers.opentelemetry",
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: otel},
		},
	}, nil
}
