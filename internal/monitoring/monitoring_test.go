package monitoring

import (
	"reflect"
	"testing"
)

func TestMetricNames(t *testing.T) {
	for q, want := range map[string][]string{
		`sum by (le) (rate(kailash_authz_check_duration_seconds_bucket{job=~"kailash.*", result!="x"}[5m]))`:                                     {"kailash_authz_check_duration_seconds_bucket"},
		`process_resident_memory_bytes / on(job, instance) group_left go_gc_gomemlimit_bytes > 0.8 and up == 1`:                                  {"go_gc_gomemlimit_bytes", "process_resident_memory_bytes", "up"},
		`kailash:authz_deny_ratio:rate5m > 3 * kailash:authz_deny_ratio:rate1d offset 1d`:                                                        {"kailash:authz_deny_ratio:rate1d", "kailash:authz_deny_ratio:rate5m"},
		`time() - max without (instance) (kailash_oidc_jwks_last_success_timestamp_seconds) > 1e3`:                                               {"kailash_oidc_jwks_last_success_timestamp_seconds"},
		`label_replace(envoy_cluster_upstream_rq_total{envoy_cluster_name=~"tenant_(.*)"}, "tenant", "$1", "envoy_cluster_name", "tenant_(.*)")`: {"envoy_cluster_upstream_rq_total"},
	} {
		if got := MetricNames(q); !reflect.DeepEqual(got, want) {
			t.Errorf("MetricNames(%s) = %v; want %v", q, got, want)
		}
	}
}

func TestSubstitute(t *testing.T) {
	got := Substitute(`rate(x{tenant=~"$tenant", a="${b:regex}"}[$__rate_interval])`)
	if want := `rate(x{tenant=~"x", a="x"}[5m])`; got != want {
		t.Fatalf("Substitute = %s; want %s", got, want)
	}
}
