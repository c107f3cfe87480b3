package translate

import (
	"fmt"
	"regexp"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/kailash-gw/kailash/internal/config"
)

// rateLimitFilter calls the global rate-limit service (ours, or
// envoyproxy/ratelimit) with one descriptor per quota of the tenant
// (config.Tenant.Quotas): the tenant comes from the control plane, the user
// from ext_authz's dynamic metadata and the role from the x-kailash-roles
// header ext_authz set, so it runs after ext_authz. It is in the chain only
// when ratelimit.grpc is configured; when the service cannot answer, the
// fail mode applies (closed: 503).
type rateLimitFilter struct{}

var _ httpFilter = rateLimitFilter{}

func (rateLimitFilter) name() string { return wellknown.HTTPRateLimit }

func (rateLimitFilter) listenerConfig(ir *IR) (proto.Message, error) {
	rl := ir.RateLimit
	if rl == nil {
		return nil, nil
	}
	return &ratelimitv3.RateLimit{
		Domain:          config.RateLimitDomain,
		Timeout:         durationpb.New(rl.Timeout),
		FailureModeDeny: rl.FailClosed,
		StatusOnError:   &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
		RateLimitService: &ratelimitconfv3.RateLimitServiceConfig{
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
				ClusterName: RateLimitCluster,
			}}},
			TransportApiVersion: corev3.ApiVersion_V3,
		},
		EnableXRatelimitHeaders: ratelimitv3.RateLimit_DRAFT_VERSION_03,
		StatPrefix:              "kailash",
	}, nil
}

// tenantConfig carries the tenant's descriptors (Envoy's rate_limits) in the
// per-virtual-host config of the filter.
func (rateLimitFilter) tenantConfig(ir *IR, vh *VirtualHost) (proto.Message, error) {
	if ir.RateLimit == nil || len(vh.Quotas) == 0 || !vh.Active {
		return nil, nil
	}
	per := &ratelimitv3.RateLimitPerRoute{}
	for _, q := range vh.Quotas {
		rl := &routev3.RateLimit{}
		for _, e := range q.Entries {
			a, err := descriptorAction(e)
			if err != nil {
				return nil, fmt.Errorf("quota %s: %w", q.Name, err)
			}
			rl.Actions = append(rl.Actions, a)
		}
		per.RateLimits = append(per.RateLimits, rl)
	}
	return per, nil
}

func (rateLimitFilter) unknownHostConfig(*IR) (proto.Message, error) { return nil, nil }

func descriptorAction(e config.DescriptorEntry) (*routev3.RateLimit_Action, error) {
	switch {
	case e.Key == config.DescUser && e.Value == "":
		return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_Metadata{Metadata: &routev3.RateLimit_Action_MetaData{
			DescriptorKey: config.DescUser,
			MetadataKey: &metadatav3.MetadataKey{
				Key:  config.ExtAuthzNamespace,
				Path: []*metadatav3.MetadataKey_PathSegment{{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: "user"}}},
			},
			Source: routev3.RateLimit_Action_MetaData_DYNAMIC,
		}}}, nil
	case e.Key == config.DescRole && e.Value != "":
		return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_HeaderValueMatch_{HeaderValueMatch: &routev3.RateLimit_Action_HeaderValueMatch{
			DescriptorKey:   config.DescRole,
			DescriptorValue: e.Value,
			Headers: []*routev3.HeaderMatcher{{
				Name: config.RolesHeader,
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{
						Regex: `(.*,)?` + regexp.QuoteMeta(e.Value) + `(,.*)?`,
					}},
				}},
			}},
		}}}, nil
	case e.Value != "":
		return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{GenericKey: &routev3.RateLimit_Action_GenericKey{
			DescriptorKey:   e.Key,
			DescriptorValue: e.Value,
		}}}, nil
	}
	return nil, fmt.Errorf("descriptor %q: no action gives a value for it", e.Key)
}
