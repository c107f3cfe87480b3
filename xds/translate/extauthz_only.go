package translate

import (
	"errors"
	"fmt"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kailash-gw/kailash/internal/config"
)

// ExtAuthzOnly renders, for an Envoy the user already runs with a static
// config (no xDS from us), the pieces that point it at `kailash authz`:
// http_filters (the ext_authz filter, to put before the router), clusters
// (kailash_authz, the Check service over HTTP/2) and virtual_hosts (one per
// tenant with its domains and typed_per_filter_config setting the
// context_extensions tenant for every route of that virtual host; the user
// adds the routes). `kailash translate --ext-authz-only`.
func ExtAuthzOnly(cfg *config.Config, in Inputs) ([]byte, error) {
	ir, err := BuildIRWith(cfg, in)
	if err != nil {
		return nil, err
	}
	if ir.AuthzTLS != nil {
		return nil, errors.New("--ext-authz-only: envoy.authz_tls is not supported in a static config yet (its certificates come over SDS); leave it unset or configure the cluster's transport_socket yourself")
	}
	f := extAuthzFilter{}
	fc, err := f.listenerConfig(ir)
	if err != nil {
		return nil, err
	}
	fa, err := toAny(fc)
	if err != nil {
		return nil, err
	}
	filter := &hcmv3.HttpFilter{Name: f.name(), ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: fa}}
	cluster, err := buildCluster(clusterSpec{name: AuthzCluster, addrs: []Address{ir.Authz.Address}, proto: http2})
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", AuthzCluster, err)
	}
	var vhosts []proto.Message
	for i := range ir.VirtualHosts {
		vh := &ir.VirtualHosts[i]
		pc, err := f.tenantConfig(ir, vh)
		if err != nil {
			return nil, err
		}
		pa, err := toAny(pc)
		if err != nil {
			return nil, err
		}
		vhosts = append(vhosts, &routev3.VirtualHost{Name: vh.Name(), Domains: vh.Domains,
			TypedPerFilterConfig: map[string]*anypb.Any{f.name(): pa}})
	}
	return protoSectionsYAML([]yamlSection{
		{"http_filters", []proto.Message{filter}},
		{"clusters", []proto.Message{cluster}},
		{"virtual_hosts", vhosts},
	})
}
