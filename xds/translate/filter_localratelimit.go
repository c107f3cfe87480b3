package translate

import (
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// localRateLimitFilter is each tenant's token bucket, per Envoy process:
// `burst` requests at once, refilled by `requests_per_second` each second.
// Over the limit Envoy answers 429 with x-ratelimit-limit/-remaining/-reset.
// At the listener it has no bucket and is disabled; tenants with a limit get
// their own bucket per virtual host.
type localRateLimitFilter struct{}

var _ httpFilter = localRateLimitFilter{}

// LocalRateLimitFilterName is the Envoy name of the local rate limit filter.
const LocalRateLimitFilterName = "envoy.filters.http.local_ratelimit"

func (localRateLimitFilter) name() string { return LocalRateLimitFilterName }

func (localRateLimitFilter) listenerConfig(*IR) (proto.Message, error) {
	return &localratelimitv3.LocalRateLimit{StatPrefix: "tenant_local_ratelimit"}, nil
}

func (localRateLimitFilter) tenantConfig(_ *IR, vh *VirtualHost) (proto.Message, error) {
	b := vh.Local
	if b == nil || !vh.Active {
		return nil, nil
	}
	return &localratelimitv3.LocalRateLimit{
		StatPrefix: "tenant_" + vh.TenantID,
		Status:     &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests},
		TokenBucket: &typev3.TokenBucket{
			MaxTokens:     b.Burst,
			TokensPerFill: wrapperspb.UInt32(b.PerSecond),
			FillInterval:  durationpb.New(time.Second),
		},
		FilterEnabled:           percent100("local_rate_limit_enabled"),
		FilterEnforced:          percent100("local_rate_limit_enforced"),
		EnableXRatelimitHeaders: ratelimitcommonv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03,
	}, nil
}

func (localRateLimitFilter) unknownHostConfig(*IR) (proto.Message, error) { return nil, nil }

func percent100(runtimeKey string) *corev3.RuntimeFractionalPercent {
	return &corev3.RuntimeFractionalPercent{
		DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED},
		RuntimeKey:   runtimeKey,
	}
}
