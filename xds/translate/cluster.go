package translate

import (
	"errors"
	"fmt"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
)

// ConnectTimeout is every upstream cluster's connect timeout.
const ConnectTimeout = time.Second

// httpProtocolOptionsKey is where upstream HTTP options live on a cluster.
const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

type upstreamProtocol int

const (
	http1 upstreamProtocol = iota
	http2
)

// clusterSpec is one cluster to build.
type clusterSpec struct {
	name  string
	addrs []Address // all IPs or all names
	proto upstreamProtocol
	// maxConnections and maxRequests are circuit breakers (0: Envoy's default).
	maxConnections, maxRequests uint32
	// tls, when set, is mutual TLS to the cluster (cluster_tls.go).
	tls *UpstreamTLS
	// replicated: one of our own services (authz, ratelimit, runner), whose
	// replicas Envoy should stop sending to as soon as one refuses
	// connections (outlier detection on local-origin failures).
	replicated bool
}

// serviceOutlierDetection ejects a replica of our own services after
// connect failures or resets Envoy saw itself (a killed process), for a
// few seconds, so requests go to the live ones until it is back. Failures
// the service answers (a 5xx, a gRPC error) never eject: they are answers.
func serviceOutlierDetection() *clusterv3.OutlierDetection {
	return &clusterv3.OutlierDetection{
		SplitExternalLocalOriginErrors:         true,
		ConsecutiveLocalOriginFailure:          wrapperspb.UInt32(1),
		EnforcingConsecutiveLocalOriginFailure: wrapperspb.UInt32(100),
		EnforcingLocalOriginSuccessRate:        wrapperspb.UInt32(0),
		EnforcingConsecutive_5Xx:               wrapperspb.UInt32(0),
		EnforcingConsecutiveGatewayFailure:     wrapperspb.UInt32(0),
		EnforcingSuccessRate:                   wrapperspb.UInt32(0),
		EnforcingFailurePercentage:             wrapperspb.UInt32(0),
		EnforcingFailurePercentageLocalOrigin:  wrapperspb.UInt32(0),
		Interval:                               durationpb.New(time.Second),
		BaseEjectionTime:                       durationpb.New(2 * time.Second),
		MaxEjectionTime:                        durationpb.New(10 * time.Second),
		MaxEjectionPercent:                     wrapperspb.UInt32(50),
	}
}

// buildClusters returns the upstream clusters sorted by name: ours (authz,
// authz_http, ratelimit, runner) and the tenants' own (tenant_<id>).
func buildClusters(ir *IR) ([]types.Resource, error) {
	specs := []clusterSpec{
		{name: AuthzCluster, addrs: []Address{ir.Authz.Address}, proto: http2, tls: ir.AuthzTLS, replicated: true}, // gRPC
	}
	if ir.AuthHTTP != nil {
		specs = append(specs, clusterSpec{name: AuthzHTTPCluster, addrs: []Address{*ir.AuthHTTP}, proto: http1, replicated: true})
	}
	if ir.RateLimit != nil {
		specs = append(specs, clusterSpec{name: RateLimitCluster, addrs: []Address{ir.RateLimit.Address}, proto: http2, tls: ir.RateLimitTLS, replicated: true})
	}
	if t := ir.Tracing; t != nil {
		specs = append(specs, clusterSpec{name: OTLPCluster, addrs: []Address{t.Collector}, proto: http2, tls: t.TLS})
	}
	specs = append(specs, clusterSpec{name: RunnerCluster, addrs: []Address{ir.Runner}, proto: http1, replicated: true})
	for _, u := range ir.Upstreams {
		specs = append(specs, clusterSpec{name: u.Name, addrs: u.Addresses, proto: http1,
			maxConnections: u.MaxConnections, maxRequests: u.MaxRequests})
	}
	var errs []error
	var out []types.Resource
	for _, s := range specs {
		c, err := buildCluster(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("cluster %s: %w", s.name, err))
			continue
		}
		out = append(out, c)
	}
	return out, errors.Join(errs...)
}

func buildCluster(s clusterSpec) (*clusterv3.Cluster, error) {
	name, p := s.name, s.proto
	if len(s.addrs) == 0 {
		return nil, errors.New("no addresses")
	}
	var eps []*endpointv3.LbEndpoint
	for _, a := range s.addrs {
		eps = append(eps, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(a)}},
		})
	}
	c := &clusterv3.Cluster{
		Name:           name,
		ConnectTimeout: durationpb.New(ConnectTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}},
		},
	}
	if s.maxConnections > 0 || s.maxRequests > 0 {
		t := &clusterv3.CircuitBreakers_Thresholds{Priority: corev3.RoutingPriority_DEFAULT}
		if s.maxConnections > 0 {
			t.MaxConnections = wrapperspb.UInt32(s.maxConnections)
		}
		if s.maxRequests > 0 {
			t.MaxRequests = wrapperspb.UInt32(s.maxRequests)
		}
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{t}}
	}
	if s.replicated {
		c.OutlierDetection = serviceOutlierDetection()
	}
	if s.addrs[0].IsIP() {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	} else {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
		// Our services bind IPv4 loopback by default; "localhost" should not
		// pick ::1 first.
		c.DnsLookupFamily = clusterv3.Cluster_V4_PREFERRED
	}
	opts := &upstreamhttpv3.HttpProtocolOptions{}
	switch p {
	case http2:
		opts.UpstreamProtocolOptions = &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}}
	default:
		opts.UpstreamProtocolOptions = &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
		}}
	}
	a, err := toAny(opts)
	if err != nil {
		return nil, err
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: a}
	if s.tls != nil {
		if c.TransportSocket, err = upstreamTransportSocket(s.tls); err != nil {
			return nil, err
		}
	}
	if err := c.ValidateAll(); err != nil {
		return nil, err
	}
	return c, nil
}
