package translate

import (
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"strconv"
	"strings"
)

// corsFilter answers preflights and adds CORS response headers per tenant.
// A preflight from an origin the tenant does not allow is answered by Envoy
// without any access-control-allow-* header (and never forwarded), so the
// browser refuses it; requests of tenants without a policy pass untouched.
type corsFilter struct{}

var _ httpFilter = corsFilter{}

// CORSFilterName is the Envoy name of the CORS filter.
const CORSFilterName = "envoy.filters.http.cors"

func (corsFilter) name() string { return CORSFilterName }

func (corsFilter) listenerConfig(*IR) (proto.Message, error) { return &corsv3.Cors{}, nil }

func (corsFilter) tenantConfig(_ *IR, vh *VirtualHost) (proto.Message, error) {
	c := vh.CORS
	if c == nil || !vh.Active {
		return nil, nil
	}
	p := &corsv3.CorsPolicy{
		AllowMethods:                 strings.Join(c.AllowMethods, ","),
		AllowHeaders:                 strings.Join(c.AllowHeaders, ","),
		ExposeHeaders:                strings.Join(c.ExposeHeaders, ","),
		AllowCredentials:             wrapperspb.Bool(c.AllowCredentials),
		ForwardNotMatchingPreflights: wrapperspb.Bool(false),
	}
	if c.MaxAge > 0 {
		p.MaxAge = strconv.FormatInt(int64(c.MaxAge.Seconds()), 10)
	}
	for _, o := range c.AllowOrigins {
		m := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: o}}
		if o == "*" {
			m = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: ""}}
		}
		p.AllowOriginStringMatch = append(p.AllowOriginStringMatch, m)
	}
	return p, nil
}

func (corsFilter) unknownHostConfig(*IR) (proto.Message, error) { return nil, nil }
