package xds

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/status"
)

// fakeClock is a settable clock for the ack grace.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// readyz is the status and body of /readyz?verbose.
func readyz(t *testing.T, s *Server) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + s.HTTPAddr() + "/readyz?verbose")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

// With no Envoy the control plane is ready (Envoys wait for it); with one
// connected that NACKs the snapshot, it turns not ready once the grace is
// over, naming the version and the NACK; an ACK of the current version
// makes it ready again; an Envoy that leaves takes its state with it.
func TestReadinessEnvoyAck(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	s, err := New(testConfig(), Options{Logger: testLogger(t), Now: clk.now, AckGrace: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	serve(t, s)
	nodes := func() []status.Envoy { return s.track.envoys(s.Version()).List }

	clk.add(time.Minute)
	if code, body := readyz(t, s); code != 200 || !strings.Contains(body, "[+]envoy_ack ok") || !strings.Contains(body, "[+]snapshot ok") {
		t.Fatalf("no envoy: %d %q, want ready", code, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := newADSClient(ctx, t, dial(t, s.GRPCAddr()), "edge-1")
	v1 := s.Version()
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ListenerType})
	lds := c.recv()
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: lds.Nonce,
		ErrorDetail: &rpcstatus.Status{Code: 3, Message: "listener kailash_http: bad filter"}})
	waitFor(t, func() bool { n := nodes(); return len(n) == 1 && n[0].LastNACK != nil })
	if code, body := readyz(t, s); code != 503 ||
		!strings.Contains(body, "[-]envoy_ack failed: no envoy has acked snapshot "+v1) ||
		!strings.Contains(body, "1 connected") || !strings.Contains(body, "last NACK from edge-1: listener kailash_http: bad filter") ||
		!strings.HasSuffix(body, "readyz check failed\n") {
		t.Fatalf("NACKed: %d %q, want 503 naming %s and the NACK", code, body, v1)
	}

	// A new snapshot is within its grace: ready while no Envoy answered.
	cfg := testConfig()
	cfg.Tenants = append(cfg.Tenants, config.Tenant{ID: "globex", Domains: []string{"globex.localhost"}})
	if err := s.Update(cfg); err != nil {
		t.Fatal(err)
	}
	v2 := s.Version()
	if code, body := readyz(t, s); code != 200 {
		t.Fatalf("within the grace: %d %q", code, body)
	}
	clk.add(time.Minute)
	if code, body := readyz(t, s); code != 503 || !strings.Contains(body, "no envoy has acked snapshot "+v2) {
		t.Fatalf("after the grace: %d %q", code, body)
	}

	// A second Envoy acknowledges the current snapshot: ready again.
	c2 := newADSClient(ctx, t, dial(t, s.GRPCAddr()), "edge-2")
	c2.send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ListenerType})
	lds2 := c2.recv()
	if lds2.VersionInfo != v2 {
		t.Fatalf("LDS version %s, want %s", lds2.VersionInfo, v2)
	}
	c2.ack(lds2)
	waitFor(t, func() bool { n := nodes(); return len(n) == 2 && n[1].AckedVersion == v2 })
	if code, body := readyz(t, s); code != 200 || !strings.Contains(body, "[+]envoy_ack ok") {
		t.Fatalf("acked: %d %q", code, body)
	}
	n := nodes()
	if n[0].NodeID != "edge-1" || n[0].AckedVersion != "" || n[0].LastNACK == nil || n[1].NodeID != "edge-2" || n[1].LastNACK != nil {
		t.Errorf("envoys = %+v, want edge-1 (NACK, nothing acked) and edge-2 (acked %s)", n, v2)
	}
	// The Envoys leave: nothing connected, ready (whatever was acked).
	cancel()
	waitFor(t, func() bool { return len(nodes()) == 0 })
	if code, body := readyz(t, s); code != 200 {
		t.Fatalf("no envoy left: %d %q", code, body)
	}
}

// Every translation is timed, accepted or not; the certificates' last load
// moves only with an accepted one.
func TestSnapshotBuildAndCertificateMetrics(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	s, err := New(testConfig(), Options{Logger: testLogger(t), Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	count := func() uint64 {
		mfs, err := s.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "kailash_xds_snapshot_build_seconds" {
				return mf.GetMetric()[0].GetHistogram().GetSampleCount()
			}
		}
		t.Fatal("no kailash_xds_snapshot_build_seconds")
		return 0
	}
	if n := count(); n != 1 {
		t.Fatalf("after New: %d builds, want 1", n)
	}
	if v := gaugeOf(t, s, "kailash_xds_certificates_last_load_timestamp_seconds"); v != 1_800_000_000 {
		t.Fatalf("certificates loaded at %v, want the clock's 1800000000", v)
	}
	clk.add(time.Minute)
	bad := testConfig()
	bad.Tenants[0].TLS = config.TenantTLS{CertFile: "/nonexistent/cert.pem", KeyFile: "/nonexistent/key.pem"}
	if err := s.Update(bad); err == nil {
		t.Fatal("a config naming missing certificate files was accepted")
	}
	if n := count(); n != 2 {
		t.Errorf("after a rejected update: %d builds, want 2", n)
	}
	if v := gaugeOf(t, s, "kailash_xds_certificates_last_load_timestamp_seconds"); v != 1_800_000_000 {
		t.Errorf("a rejected update moved the certificates' load time to %v", v)
	}
	if err := s.Update(testConfig()); err != nil {
		t.Fatal(err)
	}
	if v := gaugeOf(t, s, "kailash_xds_certificates_last_load_timestamp_seconds"); v != 1_800_000_060 {
		t.Errorf("after an accepted update: %v, want 1800000060", v)
	}
}
