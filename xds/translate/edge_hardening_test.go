package translate

import (
	"slices"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	compressorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/compressor/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	earlyheadermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/wire"
)

func u64(n uint64) *uint64 { return &n }

// hardenedConfig has quotas of every kind, the login route and a tenant on
// its own upstream.
func hardenedConfig() *config.Config {
	c := validConfig()
	c.Authz.HTTP = config.MustHostPort("127.0.0.1:9192")
	c.RateLimit.GRPC = config.MustHostPort("127.0.0.1:9193")
	c.Tenants[0].Limits = config.TenantLimits{MaxAPICallsPerDay: 5, PerUserPerHour: 3,
		PerRolePerHour: map[string]uint64{"admin": 2}, AuthPerMinute: u64(10)}
	c.Tenants[1].Upstreams = []config.HostPort{config.MustHostPort("127.0.0.1:9000")}
	return c
}

func routeConfig(t *testing.T, res *Resources) *routev3.RouteConfiguration {
	t.Helper()
	return res.Routes[0].(*routev3.RouteConfiguration)
}

func vhost(t *testing.T, rc *routev3.RouteConfiguration, name string) *routev3.VirtualHost {
	t.Helper()
	for _, v := range rc.VirtualHosts {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no virtual host %s", name)
	return nil
}

func rateLimits(t *testing.T, m map[string]*anypb.Any) *ratelimitv3.RateLimitPerRoute {
	t.Helper()
	a, ok := m[wellknown.HTTPRateLimit]
	if !ok {
		return nil
	}
	per := &ratelimitv3.RateLimitPerRoute{}
	if err := a.UnmarshalTo(per); err != nil {
		t.Fatal(err)
	}
	return per
}

// No descriptor is ever built from a request header (the client's until
// ext_authz overwrites it); the login route counts the login quota by
// client IP and nothing else; the other routes never count it.
func TestQuotaDescriptorsFromExtAuthzOnly(t *testing.T) {
	res, err := Translate(hardenedConfig())
	if err != nil {
		t.Fatal(err)
	}
	acme := vhost(t, routeConfig(t, res), "tenant_acme")
	vhRL := rateLimits(t, acme.TypedPerFilterConfig)
	if vhRL == nil || len(vhRL.RateLimits) != 5 {
		t.Fatalf("virtual host rate limits %v: want day, user, role, the decision id and the policy's role limit", vhRL)
	}
	// The last is the policy's per-role execution limit: its window entry
	// and its limit come from the policy's metadata.
	role := vhRL.RateLimits[4]
	if len(role.Actions) != 4 || role.Actions[1].GetGenericKey().GetDescriptorValue() != wire.QuotaRoleHour ||
		role.Actions[3].GetMetadata().GetMetadataKey().GetPath()[0].GetKey() != wire.MetadataRoleLimit ||
		role.GetLimit().GetDynamicMetadata().GetMetadataKey().GetPath()[0].GetKey() != wire.MetadataRoleLimit {
		t.Errorf("role limit descriptor %v", role)
	}
	vhRL.RateLimits = vhRL.RateLimits[:4]
	// The last is the decision id alone, from ext_authz, left out when absent.
	dec := vhRL.RateLimits[3].Actions
	if md := dec[0].GetMetadata(); len(dec) != 1 || md.GetDescriptorKey() != wire.DescDecisionID || !md.GetSkipIfAbsent() ||
		md.GetMetadataKey().GetPath()[0].GetKey() != wire.MetadataDecisionID {
		t.Errorf("decision id descriptor %v", dec)
	}
	for _, rl := range vhRL.RateLimits {
		for _, a := range rl.Actions {
			switch x := a.ActionSpecifier.(type) {
			case *routev3.RateLimit_Action_GenericKey_:
				if x.GenericKey.DescriptorValue == wire.QuotaAuth {
					t.Errorf("the login quota is on the virtual host: %v", rl)
				}
			case *routev3.RateLimit_Action_Metadata:
				md := x.Metadata
				if md.Source != routev3.RateLimit_Action_MetaData_DYNAMIC || md.MetadataKey.Key != wire.MetadataNamespace {
					t.Errorf("metadata action not from ext_authz's dynamic metadata: %v", md)
				}
				if md.DescriptorKey == wire.DescRole {
					p := md.MetadataKey.Path
					if len(p) != 2 || p[0].GetKey() != wire.MetadataHasRole || p[1].GetKey() != "admin" {
						t.Errorf("role action path %v, want has_role.admin", p)
					}
				}
			default:
				t.Errorf("descriptor action %T: only control-plane values and ext_authz metadata may build descriptors", x)
			}
		}
	}
	var auth *routev3.Route
	for _, r := range acme.Routes {
		if r.Name == "auth" {
			auth = r
		}
	}
	if auth == nil {
		t.Fatal("no auth route")
	}
	authRL := rateLimits(t, auth.TypedPerFilterConfig)
	if authRL == nil || len(authRL.RateLimits) != 1 {
		t.Fatalf("auth route rate limits %v: want the login quota only", authRL)
	}
	acts := authRL.RateLimits[0].Actions
	if len(acts) != 3 || acts[1].GetGenericKey().GetDescriptorValue() != wire.QuotaAuth || acts[2].GetRemoteAddress() == nil {
		t.Errorf("login quota actions %v: want tenant, quota=auth, remote_address", acts)
	}

	// globex has no quotas: its login route still replaces the virtual
	// host's rate limits with an empty set.
	globex := vhost(t, routeConfig(t, res), "tenant_globex")
	for _, r := range globex.Routes {
		if r.Name == "auth" {
			if rl := rateLimits(t, r.TypedPerFilterConfig); rl == nil || len(rl.RateLimits) != 0 {
				t.Errorf("globex login route rate limits %v: want an empty config", rl)
			}
		}
	}
}

// The identity token is removed on routes to tenants' own upstreams, never
// on the runner's.
func TestIdentityTokenOnlyToRunner(t *testing.T) {
	res, err := Translate(hardenedConfig())
	if err != nil {
		t.Fatal(err)
	}
	rc := routeConfig(t, res)
	for _, c := range []struct {
		vh      string
		removed bool
	}{{"tenant_acme", false}, {"tenant_globex", true}} {
		for _, r := range vhost(t, rc, c.vh).Routes {
			if r.Name == "auth" {
				continue
			}
			if got := slices.Contains(r.RequestHeadersToRemove, wire.HeaderIdentity); got != c.removed {
				t.Errorf("%s route to %s: removes %s = %v, want %v", c.vh, r.GetRoute().GetCluster(), wire.HeaderIdentity, got, c.removed)
			}
		}
	}
}

func listenerHCM(t *testing.T, l *listenerv3.Listener, chain int) (*hcmv3.HttpConnectionManager, *listenerv3.Filter) {
	t.Helper()
	fs := l.FilterChains[chain].Filters
	hcm := &hcmv3.HttpConnectionManager{}
	if err := fs[len(fs)-1].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	return hcm, fs[0]
}

// Every listener strips client x-kailash-* before any filter, refuses
// underscored headers, and has its timeouts and caps: defaults, or
// envoy.listener, with tls.listener over it for HTTPS.
func TestListenerSettings(t *testing.T) {
	c := validConfig()
	res, err := Translate(c)
	if err != nil {
		t.Fatal(err)
	}
	hcm, limit := listenerHCM(t, res.Listeners[0].(*listenerv3.Listener), 0)
	if limit.Name != ConnectionLimitFilterName {
		t.Fatalf("first network filter %s", limit.Name)
	}
	if got := hcm.CommonHttpProtocolOptions.GetHeadersWithUnderscoresAction().String(); got != "REJECT_REQUEST" {
		t.Errorf("headers_with_underscores_action %s", got)
	}
	for _, d := range []struct {
		name      string
		got, want time.Duration
	}{
		{"idle_timeout", hcm.CommonHttpProtocolOptions.GetIdleTimeout().AsDuration(), config.DefaultIdleTimeout},
		{"stream_idle_timeout", hcm.StreamIdleTimeout.AsDuration(), config.DefaultStreamIdleTimeout},
		{"request_headers_timeout", hcm.RequestHeadersTimeout.AsDuration(), config.DefaultRequestHeadersTimeout},
		{"request_timeout", hcm.RequestTimeout.AsDuration(), config.DefaultRequestTimeout},
	} {
		if d.got != d.want {
			t.Errorf("%s %s, want %s", d.name, d.got, d.want)
		}
	}
	if n := hcm.Http2ProtocolOptions.GetMaxConcurrentStreams().GetValue(); n != config.DefaultMaxConcurrentStreams {
		t.Errorf("max_concurrent_streams %d", n)
	}
	if len(hcm.EarlyHeaderMutationExtensions) != 1 {
		t.Fatalf("early header mutations %v", hcm.EarlyHeaderMutationExtensions)
	}
	hm := &earlyheadermutationv3.HeaderMutation{}
	if err := hcm.EarlyHeaderMutationExtensions[0].TypedConfig.UnmarshalTo(hm); err != nil {
		t.Fatal(err)
	}
	km := hm.Mutations[0].GetRemoveOnMatch().GetKeyMatcher()
	if km.GetPrefix() != "x-kailash-" || !km.IgnoreCase {
		t.Errorf("early removal matcher %v", km)
	}

	// HTTPS: tls.listener over envoy.listener.
	off := false
	c = tlsConfig()
	c.Envoy.Listener = config.Listener{RequestHeadersTimeout: 4 * time.Second, MaxConnections: 50, StreamIdleTimeout: time.Minute}
	c.TLS.Listener = config.Listener{RequestHeadersTimeout: 2 * time.Second, Compression: &off}
	res, err = TranslateWith(c, Inputs{Certificates: map[string]KeyPair{"acme": testPair(t, "acme")}})
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := listenerHCM(t, res.Listeners[0].(*listenerv3.Listener), 0)
	https, _ := listenerHCM(t, res.Listeners[1].(*listenerv3.Listener), 0)
	if plain.RequestHeadersTimeout.AsDuration() != 4*time.Second || https.RequestHeadersTimeout.AsDuration() != 2*time.Second {
		t.Errorf("request_headers_timeout plain %s https %s", plain.RequestHeadersTimeout.AsDuration(), https.RequestHeadersTimeout.AsDuration())
	}
	if https.StreamIdleTimeout.AsDuration() != time.Minute {
		t.Errorf("https stream_idle_timeout %s: want envoy.listener's 1m", https.StreamIdleTimeout.AsDuration())
	}
	has := func(h *hcmv3.HttpConnectionManager) bool {
		return slices.ContainsFunc(h.HttpFilters, func(f *hcmv3.HttpFilter) bool { return f.Name == CompressorFilterName })
	}
	if !has(plain) || has(https) {
		t.Errorf("compressor: plain %v (want on), https %v (want off)", has(plain), has(https))
	}
}

// A tenant can turn compression off on its virtual host and give its routes
// their own stream idle timeout; other tenants keep the listener's.
func TestTenantStreamSettings(t *testing.T) {
	c := validConfig()
	off := false
	c.Tenants[1].Compression = &off
	c.Tenants[1].StreamIdleTimeout = time.Hour
	res, err := Translate(c)
	if err != nil {
		t.Fatal(err)
	}
	rc := routeConfig(t, res)
	acme, globex := vhost(t, rc, "tenant_acme"), vhost(t, rc, "tenant_globex")
	if _, ok := acme.TypedPerFilterConfig[CompressorFilterName]; ok {
		t.Error("acme: compressor configured per virtual host")
	}
	if acme.Routes[len(acme.Routes)-1].GetRoute().IdleTimeout != nil {
		t.Error("acme: route idle_timeout set")
	}
	a, ok := globex.TypedPerFilterConfig[CompressorFilterName]
	per := &compressorv3.CompressorPerRoute{}
	if !ok || a.UnmarshalTo(per) != nil || !per.GetDisabled() {
		t.Errorf("globex: compressor not disabled: %v", a)
	}
	if got := globex.Routes[len(globex.Routes)-1].GetRoute().GetIdleTimeout().AsDuration(); got != time.Hour {
		t.Errorf("globex: route idle_timeout %s", got)
	}
	c.Tenants[1].StreamIdleTimeout = -time.Second
	if _, err := Translate(c); err == nil || !strings.Contains(err.Error(), "stream_idle_timeout") {
		t.Errorf("negative stream_idle_timeout: %v", err)
	}
}
