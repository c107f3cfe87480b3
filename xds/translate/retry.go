package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"sync"
)

// Retries toward our own replicated services. A replica that was killed
// refuses connections (or resets them) until Envoy notices, and outlier
// detection (serviceOutlierDetection) takes a failure to notice: the call
// that met the dead replica is retried once on another host instead of
// becoming a 503. Only failures where the request cannot have been handled
// are retried — a connect failure, a refused stream, a reset before the
// request went out — so nothing is done twice (a rate-limit hit counted
// twice, a workflow started twice). The ext_authz Check has no effect, so it
// is also retried on a reset and on gRPC UNAVAILABLE (a draining replica).
const (
	retryOnNotSent     = "connect-failure,refused-stream,reset-before-request"
	retryOnIdempotentG = "connect-failure,refused-stream,reset,unavailable"
	serviceRetries     = 2
	previousHostsName  = "envoy.retry_host_predicates.previous_hosts"
)

func previousHosts() *anypb.Any {
	a, err := anypb.New(&previoushostsv3.PreviousHostsPredicate{})
	if err != nil {
		panic(err) // a constant message: cannot fail
	}
	return a
}

// grpcRetryPolicy is the GrpcService retry policy of the ext_authz
// (idempotent) or rate-limit (counts: not-sent failures only) call.
func grpcRetryPolicy(idempotent bool) *corev3.RetryPolicy {
	on := retryOnNotSent
	if idempotent {
		on = retryOnIdempotentG
	}
	return &corev3.RetryPolicy{
		NumRetries: wrapperspb.UInt32(serviceRetries),
		RetryOn:    on,
		RetryHostPredicate: []*corev3.RetryPolicy_RetryHostPredicate{{
			Name:       previousHostsName,
			ConfigType: &corev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: previousHosts()},
		}},
		HostSelectionRetryMaxAttempts: 3,
	}
}

// routeRetryPolicy retries a request to the runner or the login service on
// another replica when it cannot have reached one. Every route of every
// tenant has it, so it is one message, shared (at 100,000 tenants, copies
// were 100 MB of the control plane's heap): resources are never modified
// once built, and proto marshalling only reads it.
func routeRetryPolicy() *routev3.RetryPolicy { return sharedRouteRetryPolicy() }

var sharedRouteRetryPolicy = sync.OnceValue(func() *routev3.RetryPolicy {
	return &routev3.RetryPolicy{
		RetryOn:    retryOnNotSent,
		NumRetries: wrapperspb.UInt32(serviceRetries),
		RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{
			Name:       previousHostsName,
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: previousHosts()},
		}},
		HostSelectionRetryMaxAttempts: 3,
	}
})
