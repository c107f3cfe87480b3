package xds

import (
	"testing"

	"github.com/kailash-gw/kailash/internal/config"
)

// TestPreparePublishesOnlyOnCommit: a prepared config changes nothing until
// its commit; a refused one changes nothing and counts nothing by itself
// (the watcher counts a rejected revision once, in every component).
func TestPreparePublishesOnlyOnCommit(t *testing.T) {
	s := newServer(t, testConfig())
	v0 := s.Version()
	next := testConfig()
	next.Tenants = append(next.Tenants, config.Tenant{ID: "globex", Domains: []string{"globex.localhost"}})
	commit, err := s.Prepare(next)
	if err != nil {
		t.Fatal(err)
	}
	if s.Version() != v0 {
		t.Fatalf("Prepare published: version %s, was %s", s.Version(), v0)
	}
	bad := testConfig()
	bad.Tenants[0].TLS = config.TenantTLS{CertFile: "/nonexistent/cert.pem", KeyFile: "/nonexistent/key.pem"}
	if _, err := s.Prepare(bad); err == nil {
		t.Fatal("a config naming missing certificate files was prepared")
	}
	commit()
	v1 := s.Version()
	if v1 == v0 {
		t.Fatal("commit published nothing")
	}
	if v, _ := metricOf(t, s, "kailash_xds_config_rejected_total"); v != 0 {
		t.Fatalf("Prepare counted a rejection itself: %v", v)
	}
	s.ConfigRejected()
	if v, _ := metricOf(t, s, "kailash_xds_config_rejected_total"); v != 1 {
		t.Fatalf("ConfigRejected: counter %v, want 1", v)
	}
	// The same resources again: a commit publishes nothing new.
	commit, err = s.Prepare(next)
	if err != nil {
		t.Fatal(err)
	}
	commit()
	if s.Version() != v1 {
		t.Fatalf("an unchanged config was published again: %s, was %s", s.Version(), v1)
	}
}

func metricOf(t *testing.T, s *Server, name string) (float64, bool) {
	t.Helper()
	mfs, err := s.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetCounter().GetValue(), true
		}
	}
	return 0, false
}
