package translate

import (
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	healthcheckv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"

	"github.com/kailash-gw/kailash/internal/config"
)

// The health check filter is first on every listener, answers the
// configured path itself, keeps probes out of the access log, and is
// gone (with the access log filter) when the path is off.
func TestHealthCheckFilter(t *testing.T) {
	for _, tc := range []struct{ set, want string }{{"", config.DefaultHealthCheckPath}, {"/lb/ping", "/lb/ping"}, {config.HealthCheckOff, ""}} {
		c := validConfig()
		c.Envoy.HealthCheckPath = tc.set
		res, err := Translate(c)
		if err != nil {
			t.Fatal(err)
		}
		hcm, _ := listenerHCM(t, res.Listeners[0].(*listenerv3.Listener), 0)
		first := hcm.HttpFilters[0]
		var file *accesslogv3.AccessLog
		for _, al := range hcm.AccessLog {
			if al.Name == "envoy.access_loggers.stdout" { // the default envoy.access_log
				file = al
			}
		}
		if file == nil {
			t.Fatalf("%q: no file access log", tc.set)
		}
		if tc.want == "" {
			for _, f := range hcm.HttpFilters {
				if f.Name == HealthCheckFilterName {
					t.Errorf("%q: health check filter present", tc.set)
				}
			}
			if file.GetFilter() != nil {
				t.Errorf("%q: access log filtered: %v", tc.set, file.GetFilter())
			}
			continue
		}
		if first.Name != HealthCheckFilterName {
			t.Fatalf("%q: first filter %s", tc.set, first.Name)
		}
		hc := &healthcheckv3.HealthCheck{}
		if err := first.GetTypedConfig().UnmarshalTo(hc); err != nil {
			t.Fatal(err)
		}
		if hc.GetPassThroughMode().GetValue() || hc.PassThroughMode == nil {
			t.Errorf("%q: pass_through_mode %v, want false", tc.set, hc.PassThroughMode)
		}
		if len(hc.Headers) != 1 || hc.Headers[0].Name != ":path" || hc.Headers[0].GetStringMatch().GetExact() != tc.want {
			t.Errorf("%q: headers %v, want :path exactly %s", tc.set, hc.Headers, tc.want)
		}
		if _, ok := file.GetFilter().GetFilterSpecifier().(*accesslogv3.AccessLogFilter_NotHealthCheckFilter); !ok {
			t.Errorf("%q: access log filter %v, want not_health_check_filter", tc.set, file.GetFilter())
		}
	}
}
