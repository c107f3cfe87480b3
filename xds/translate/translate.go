// Package translate turns a kailash config into Envoy resources.
//
// It is a pure function of its input: config → IR (BuildIR) → listeners,
// routes and clusters (Translate). It does no I/O and never touches the
// snapshot cache or the xDS server, so the same code runs in the control
// plane, in `kailash translate`/`kailash validate`, and in golden tests.
// Output is deterministic: the same config always yields byte-identical
// resources, because reordering resources makes Envoy drain listeners.
package translate

import (
	"errors"
	"fmt"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kailash-gw/kailash/internal/config"
)

// Names of the resources we publish. Envoy's bootstrap and other parts of
// kailash refer to them, so they are part of the contract.
const (
	ListenerName     = "kailash_http"
	RouteConfigName  = "kailash_routes"
	AuthzCluster     = "kailash_authz"
	RunnerCluster    = "kailash_runner"
	RateLimitCluster = "kailash_ratelimit"
	UnknownHostName  = "unknown_host"
	HCMStatPrefix    = "ingress_http"
	TenantContextKey = "tenant" // ext_authz context extension holding the tenant id
)

// Resources are the Envoy resources for one config, each list sorted by name.
type Resources struct {
	Listeners []types.Resource
	Routes    []types.Resource
	Clusters  []types.Resource
}

// validator is implemented by every generated Envoy proto.
type validator interface {
	ValidateAll() error
}

// Translate checks cfg and translates it into Envoy resources. Every problem
// is reported at once (errors.Join), each naming the field or tenant; no
// partial result is returned with an error.
func Translate(cfg *config.Config) (*Resources, error) {
	ir, err := BuildIR(cfg)
	if err != nil {
		return nil, err
	}
	return FromIR(ir)
}

// FromIR translates an IR built by BuildIR into Envoy resources.
func FromIR(ir *IR) (*Resources, error) {
	if ir == nil {
		return nil, errors.New("translate: nil IR")
	}
	var errs []error
	filters := httpFilters()

	lis, err := buildListener(ir, filters)
	if err != nil {
		errs = append(errs, fmt.Errorf("listener %s: %w", ListenerName, err))
	}
	rc, err := buildRouteConfig(ir, filters)
	if err != nil {
		errs = append(errs, fmt.Errorf("route configuration %s: %w", RouteConfigName, err))
	}
	clusters, err := buildClusters(ir)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Resources{
		Listeners: []types.Resource{lis},
		Routes:    []types.Resource{rc},
		Clusters:  clusters,
	}, nil
}

// validate runs the proto's generated validation (all violations, not just
// the first).
func validate(m proto.Message) error {
	if v, ok := m.(validator); ok {
		return v.ValidateAll()
	}
	return nil
}

// toAny validates m and wraps it in an Any.
func toAny(m proto.Message) (*anypb.Any, error) {
	if err := validate(m); err != nil {
		return nil, err
	}
	return anypb.New(m)
}
