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

// buildClusters returns the upstream clusters sorted by name.
func buildClusters(ir *IR) ([]types.Resource, error) {
	specs := []struct {
		name  string
		addr  Address
		proto upstreamProtocol
	}{
		{AuthzCluster, ir.Authz.Address, http2}, // gRPC
		{RunnerCluster, ir.Runner, http1},
	}
	var errs []error
	var out []types.Resource
	for _, s := range specs {
		c, err := buildCluster(s.name, s.addr, s.proto)
		if err != nil {
			errs = append(errs, fmt.Errorf("cluster %s: %w", s.name, err))
			continue
		}
		out = append(out, c)
	}
	return out, errors.Join(errs...)
}

func buildCluster(name string, addr Address, p upstreamProtocol) (*clusterv3.Cluster, error) {
	c := &clusterv3.Cluster{
		Name:           name,
		ConnectTimeout: durationpb.New(ConnectTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{
					HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
						Address: socketAddress(addr),
					}},
				}},
			}},
		},
	}
	if addr.IsIP() {
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
	if err := c.ValidateAll(); err != nil {
		return nil, err
	}
	return c, nil
}
