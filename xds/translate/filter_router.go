package translate

import (
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
)

// routerFilter is the terminal filter that forwards to the route's cluster.
type routerFilter struct{ noPerVirtualHost }

var _ httpFilter = routerFilter{}

func (routerFilter) name() string { return wellknown.Router }

func (routerFilter) listenerConfig(*IR) (proto.Message, error) { return &routerv3.Router{}, nil }
