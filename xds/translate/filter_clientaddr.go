package translate

import (
	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	"google.golang.org/protobuf/proto"

	"github.com/kailash-gw/kailash/internal/wire"
)

// HeaderMutationFilterName is the Envoy name of the header mutation HTTP
// filter.
const HeaderMutationFilterName = "envoy.filters.http.header_mutation"

// clientAddressFilter tells ext_authz the client's address as the
// connection manager decided it (trusted proxies, X-Forwarded-For hops):
// Envoy's CheckRequest source is the connection's peer, which behind a load
// balancer is the balancer. It runs after the client's x-kailash-* headers
// are gone (early header mutation) and overwrites any.
type clientAddressFilter struct{ noPerVirtualHost }

var _ httpFilter = clientAddressFilter{}

func (clientAddressFilter) name() string { return HeaderMutationFilterName }

func (clientAddressFilter) listenerConfig(ir *IR) (proto.Message, error) {
	if !trustsProxies(ir) {
		return nil, nil
	}
	return &headermutationv3.HeaderMutation{Mutations: &headermutationv3.Mutations{
		RequestMutations: []*mutationrulesv3.HeaderMutation{{Action: &mutationrulesv3.HeaderMutation_Append{Append: &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: wire.HeaderClientAddress, Value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}}}},
	}}, nil
}

// trustsProxies reports whether a listener takes the client address from
// X-Forwarded-For (hops or trusted proxies).
func trustsProxies(ir *IR) bool {
	ls := []ListenerSettings{ir.HTTPListener}
	if ir.HTTPS != nil {
		ls = append(ls, ir.HTTPS.Settings)
	}
	for _, s := range ls {
		if s.XFFNumTrustedHops > 0 || len(s.TrustedProxies) > 0 {
			return true
		}
	}
	return false
}
