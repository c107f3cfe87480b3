package translate

import (
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/wire"
)

// rateLimitFilter calls the global rate-limit service (ours, or
// envoyproxy/ratelimit) with one descriptor per quota of the tenant
// (config.Tenant.Quotas): the tenant comes from the control plane, the user
// and the roles only from ext_authz's dynamic metadata (never from a
// header, which is the client's wherever ext_authz did not overwrite it),
// so it runs after ext_authz. The login endpoints (/auth/*, no ext_authz)
// have their own descriptors, set on their route (authRateLimits): the
// tenant's login quota by client IP, nothing else. It is in the chain only
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
		Domain:          wire.RateLimitDomain,
		Timeout:         durationpb.New(rl.Timeout),
		FailureModeDeny: rl.FailClosed,
		StatusOnError:   &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
		RateLimitService: &ratelimitconfv3.RateLimitServiceConfig{
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
				ClusterName: RateLimitCluster,
			}}, RetryPolicy: grpcRetryPolicy(false)},
			TransportApiVersion: corev3.ApiVersion_V3,
		},
		EnableXRatelimitHeaders: ratelimitv3.RateLimit_DRAFT_VERSION_03,
		StatPrefix:              "kailash",
	}, nil
}

// tenantConfig carries the tenant's descriptors (Envoy's rate_limits) in the
// per-virtual-host config of the filter: every quota but the login quota.
func (rateLimitFilter) tenantConfig(ir *IR, vh *VirtualHost) (proto.Message, error) {
	if ir.RateLimit == nil || !vh.Active {
		return nil, nil
	}
	per, err := quotaRateLimits(vh, false, ir.Explain)
	if err != nil {
		return nil, err
	}
	if per == nil {
		per = &ratelimitv3.RateLimitPerRoute{}
	}
	// The policy's per-role execution limit: sent only when the policy set
	// one (the window entry comes from its metadata), with the limit as
	// Envoy's override.
	roleMD := func(field string) *metadatav3.MetadataKey {
		return &metadatav3.MetadataKey{Key: wire.MetadataNamespace, Path: []*metadatav3.MetadataKey_PathSegment{
			{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: wire.MetadataRoleLimit}},
			{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: field}},
		}}
	}
	userAction, err := descriptorAction(config.DescriptorEntry{Key: wire.DescUser})
	if err != nil {
		return nil, err
	}
	per.RateLimits = append(per.RateLimits, &routev3.RateLimit{
		Actions: []*routev3.RateLimit_Action{
			{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{GenericKey: &routev3.RateLimit_Action_GenericKey{DescriptorKey: wire.DescTenant, DescriptorValue: vh.TenantID}}},
			{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{GenericKey: &routev3.RateLimit_Action_GenericKey{DescriptorKey: wire.DescQuota, DescriptorValue: wire.QuotaRoleHour}}},
			userAction,
			{ActionSpecifier: &routev3.RateLimit_Action_Metadata{Metadata: &routev3.RateLimit_Action_MetaData{
				DescriptorKey: wire.DescWindow, MetadataKey: roleMD("unit"), Source: routev3.RateLimit_Action_MetaData_DYNAMIC,
			}}},
		},
		Limit: &routev3.RateLimit_Override{OverrideSpecifier: &routev3.RateLimit_Override_DynamicMetadata_{DynamicMetadata: &routev3.RateLimit_Override_DynamicMetadata{
			MetadataKey: &metadatav3.MetadataKey{Key: wire.MetadataNamespace, Path: []*metadatav3.MetadataKey_PathSegment{
				{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: wire.MetadataRoleLimit}},
			}},
		}}},
	})
	return per, nil
}

// authRateLimits is the rate-limit filter's config on a tenant's login
// route: the login quota only (an empty config when there is none, which
// still replaces the virtual host's: login requests never count against
// the tenant, user or role quotas). nil without a rate-limit service.
func authRateLimits(ir *IR, vh *VirtualHost) (*ratelimitv3.RateLimitPerRoute, error) {
	if ir.RateLimit == nil {
		return nil, nil
	}
	per, err := quotaRateLimits(vh, true, false)
	if per == nil && err == nil {
		per = &ratelimitv3.RateLimitPerRoute{}
	}
	return per, err
}

// quotaRateLimits is one rate_limits entry per quota of vh whose Auth is
// auth (nil when none).
func quotaRateLimits(vh *VirtualHost, auth, explainDecisions bool) (*ratelimitv3.RateLimitPerRoute, error) {
	var per *ratelimitv3.RateLimitPerRoute
	for _, q := range vh.Quotas {
		if q.Auth != auth {
			continue
		}
		if per == nil {
			per = &ratelimitv3.RateLimitPerRoute{}
		}
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
	if per != nil && !auth && explainDecisions {
		// The decision id, a descriptor of its own that counts nothing
		// (wire.DescDecisionID): absent (no ext_authz), it is left out.
		per.RateLimits = append(per.RateLimits, &routev3.RateLimit{Actions: []*routev3.RateLimit_Action{{
			ActionSpecifier: &routev3.RateLimit_Action_Metadata{Metadata: &routev3.RateLimit_Action_MetaData{
				DescriptorKey: wire.DescDecisionID,
				MetadataKey: &metadatav3.MetadataKey{
					Key:  wire.MetadataNamespace,
					Path: []*metadatav3.MetadataKey_PathSegment{{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: wire.MetadataDecisionID}}},
				},
				Source:       routev3.RateLimit_Action_MetaData_DYNAMIC,
				SkipIfAbsent: true,
			}},
		}}})
	}
	return per, nil
}

func (rateLimitFilter) unknownHostConfig(*IR) (proto.Message, error) { return nil, nil }

func descriptorAction(e config.DescriptorEntry) (*routev3.RateLimit_Action, error) {
	switch {
	case e.Key == wire.DescUser && e.Value == "":
		return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_Metadata{Metadata: &routev3.RateLimit_Action_MetaData{
			DescriptorKey: wire.DescUser,
			MetadataKey: &metadatav3.MetadataKey{
				Key:  wire.MetadataNamespace,
				Path: []*metadatav3.MetadataKey_PathSegment{{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: wire.MetadataUser}}},
			},
			Source: routev3.RateLimit_Action_MetaData_DYNAMIC,
		}}}, nil
	case e.Key == wire.DescRole && e.Value != "":
		// has_role.<R> is the string R exactly when ext_authz found the
		// caller holds R; absent, the whole descriptor is left out (the
		// action's skip_if_absent is false).
		return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_Metadata{Metadata: &routev3.RateLimit_Action_MetaData{
			DescriptorKey: wire.DescRole,
			MetadataKey: &metadatav3.MetadataKey{
				Key: wire.MetadataNamespace,
				Path: []*metadatav3.MetadataKey_PathSegment{
					{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: wire.MetadataHasRole}},
					{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: e.Value}},
				},
			},
			Source: routev3.RateLimit_Action_MetaData_DYNAMIC,
		}}}, nil
	case e.Key == wire.DescRemoteAddress && e.Value == "":
		// The connection's peer (use_remote_address, no trusted hops):
		// x-forwarded-for cannot choose the counter.
		return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_RemoteAddress_{
			RemoteAddress: &routev3.RateLimit_Action_RemoteAddress{},
		}}, nil
	case e.Value != "":
		return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{GenericKey: &routev3.RateLimit_Action_GenericKey{
			DescriptorKey:   e.Key,
			DescriptorValue: e.Value,
		}}}, nil
	}
	return nil, fmt.Errorf("descriptor %q: no action gives a value for it", e.Key)
}
