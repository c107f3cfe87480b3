package translate

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	healthcheckv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// HealthCheckFilterName is the Envoy name of the HTTP health check filter.
const HealthCheckFilterName = "envoy.filters.http.health_check"

// healthCheckFilter answers envoy.health_check_path from the listener
// itself (pass_through_mode false: no upstream is asked): 200 while Envoy
// serves, 503 once it has been told to fail health checks
// (/healthcheck/fail, the first step of a drain), so load balancers and
// Kubernetes take it out before its listeners close. It is first in the
// chain, for any host and any method: a probe is never refused by a
// tenant's IP allowlist, answered as an unknown host, sent to ext_authz or
// counted by a rate limit; Envoy marks it as a health check, so it is not
// traced and the access log leaves it out (accessLogs). Left out of the
// chain when the path is "off".
type healthCheckFilter struct{ noPerVirtualHost }

var _ httpFilter = healthCheckFilter{}

func (healthCheckFilter) name() string { return HealthCheckFilterName }

func (healthCheckFilter) listenerConfig(ir *IR) (proto.Message, error) {
	if ir.HealthCheckPath == "" {
		return nil, nil
	}
	return &healthcheckv3.HealthCheck{
		PassThroughMode: wrapperspb.Bool(false),
		Headers: []*routev3.HeaderMatcher{{
			Name: ":path",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Exact{Exact: ir.HealthCheckPath},
			}},
		}},
	}, nil
}
