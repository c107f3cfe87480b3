package xds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/xds/translate"
)

func testConfig() *config.Config {
	return &config.Config{
		Envoy:  config.Envoy{Listen: config.MustHostPort("127.0.0.1:8080"), NodeID: "kailash-envoy", Routes: config.RoutesSingle},
		XDS:    config.XDS{GRPC: config.MustHostPort("127.0.0.1:0"), HTTP: config.MustHostPort("127.0.0.1:0")},
		Authz:  config.Authz{GRPC: config.MustHostPort("127.0.0.1:9191"), Timeout: 500 * time.Millisecond, MaxRequestBytes: 8192},
		Runner: config.Runner{HTTP: config.MustHostPort("127.0.0.1:8081")},
		Tenants: []config.Tenant{
			{ID: "acme", Domains: []string{"acme.localhost"}},
		},
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func newServer(t *testing.T, cfg *config.Config) *Server {
	t.Helper()
	s, err := New(cfg, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// serve runs s until the test ends and checks Serve returns nil promptly.
func serve(t *testing.T, s *Server) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	stop := func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	}
	t.Cleanup(stop)
	return cancel
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	cfg := testConfig()
	cfg.Tenants[0].Domains = nil
	if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), `tenant "acme"`) {
		t.Fatalf("New: %v", err)
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Fatal("New(nil): expected an error")
	}
}

func TestNewBindsPorts(t *testing.T) {
	s := newServer(t, testConfig())
	cfg := testConfig()
	cfg.XDS.GRPC = config.MustHostPort(s.GRPCAddr())
	if _, err := New(cfg, Options{Logger: testLogger(t)}); err == nil {
		t.Fatal("second server on the same port: expected an error")
	}
	cfg = testConfig()
	cfg.XDS.HTTP = config.MustHostPort(s.HTTPAddr())
	if _, err := New(cfg, Options{Logger: testLogger(t)}); err == nil {
		t.Fatal("second server on the same HTTP port: expected an error")
	}
}

func TestUpdateInvalidKeepsLastGood(t *testing.T) {
	s := newServer(t, testConfig())
	v0 := s.Version()
	if v0 == "" || testutil.ToFloat64(s.m.version) != 1 || testutil.ToFloat64(s.m.snapshots) != 1 {
		t.Fatalf("first snapshot: version %q", v0)
	}

	bad := testConfig()
	bad.Tenants = append(bad.Tenants, config.Tenant{ID: "globex", Domains: []string{"ACME.localhost"}})
	err := s.Update(bad)
	if err == nil || !strings.Contains(err.Error(), `tenant "globex"`) {
		t.Fatalf("Update(colliding domains): %v", err)
	}
	if err := s.Update(nil); err == nil {
		t.Fatal("Update(nil): expected an error")
	}
	if got := s.Version(); got != v0 {
		t.Fatalf("version changed to %q after a rejected config", got)
	}
	snap, err := s.cache.GetSnapshot("kailash-envoy")
	if err != nil || snap.GetVersion(resource.RouteType) != v0 {
		t.Fatalf("cached snapshot: %v %v", snap, err)
	}
	if got := testutil.ToFloat64(s.m.rejected); got != 2 {
		t.Fatalf("kailash_xds_config_rejected_total = %v, want 2", got)
	}

	// The same config again publishes nothing; a changed one a new version.
	if err := s.Update(testConfig()); err != nil || s.Version() != v0 {
		t.Fatalf("unchanged config: %v, version %q", err, s.Version())
	}
	good := testConfig()
	good.Tenants = append(good.Tenants, config.Tenant{ID: "globex", Domains: []string{"globex.localhost"}})
	if err := s.Update(good); err != nil {
		t.Fatal(err)
	}
	if v := s.Version(); v == v0 || v != newServer(t, good).Version() {
		t.Fatalf("version after update %q (was %q)", v, v0)
	}
	if testutil.ToFloat64(s.m.version) != 2 || testutil.ToFloat64(s.m.snapshots) != 2 {
		t.Fatal("snapshot metrics not updated")
	}
}

// adsClient is a minimal ADS client: Envoy's side of the protocol.
type adsClient struct {
	t      *testing.T
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *corev3.Node
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func newADSClient(ctx context.Context, t *testing.T, conn *grpc.ClientConn, node string) *adsClient {
	t.Helper()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &adsClient{t: t, stream: st, node: &corev3.Node{Id: node, Cluster: "kailash"}}
}

func (c *adsClient) send(req *discoveryv3.DiscoveryRequest) {
	c.t.Helper()
	req.Node = c.node
	if err := c.stream.Send(req); err != nil {
		c.t.Fatal(err)
	}
}

// recv returns the next response, failing the test after 5s.
func (c *adsClient) recv() *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	type result struct {
		r   *discoveryv3.DiscoveryResponse
		err error
	}
	ch := make(chan result, 1)
	go func() {
		r, err := c.stream.Recv()
		ch <- result{r, err}
	}()
	select {
	case res := <-ch:
		if res.err != nil {
			c.t.Fatal(res.err)
		}
		return res.r
	case <-time.After(5 * time.Second):
		c.t.Fatal("no discovery response within 5s")
		return nil
	}
}

func (c *adsClient) ack(r *discoveryv3.DiscoveryResponse, names ...string) {
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce, ResourceNames: names})
}

// TestADS drives the server as Envoy would, from a node id the config does
// not name: CDS, LDS, RDS, an update, a NACK, then shutdown.
func TestADS(t *testing.T) {
	s := newServer(t, testConfig())
	stop := serve(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := dial(t, s.GRPCAddr())

	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hc.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", hc, err)
	}

	c := newADSClient(ctx, t, conn, "envoy-from-elsewhere")
	v1 := s.Version()

	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType})
	cds := c.recv()
	if cds.TypeUrl != resource.ClusterType || cds.VersionInfo != v1 || len(cds.Resources) != 2 {
		t.Fatalf("CDS: type %s version %s (want %s), %d resources", cds.TypeUrl, cds.VersionInfo, v1, len(cds.Resources))
	}
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ListenerType})
	lds := c.recv()
	if lds.TypeUrl != resource.ListenerType || lds.VersionInfo != v1 || len(lds.Resources) != 1 {
		t.Fatalf("LDS: %s %s %d", lds.TypeUrl, lds.VersionInfo, len(lds.Resources))
	}
	c.ack(cds)
	c.ack(lds)
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.RouteType, ResourceNames: []string{"kailash_routes"}})
	rds := c.recv()
	if rds.TypeUrl != resource.RouteType || rds.VersionInfo != v1 || len(rds.Resources) != 1 {
		t.Fatalf("RDS: %s %s %d", rds.TypeUrl, rds.VersionInfo, len(rds.Resources))
	}
	rc := &routev3.RouteConfiguration{}
	if err := rds.Resources[0].UnmarshalTo(rc); err != nil {
		t.Fatal(err)
	}
	if len(rc.VirtualHosts) != 2 {
		t.Fatalf("virtual hosts: %d, want 2", len(rc.VirtualHosts))
	}
	c.ack(rds, "kailash_routes")

	// A second tenant: every watched type gets the new version.
	cfg := testConfig()
	cfg.Tenants = append(cfg.Tenants, config.Tenant{ID: "globex", Domains: []string{"globex.localhost"}})
	if err := s.Update(cfg); err != nil {
		t.Fatal(err)
	}
	v2 := s.Version()
	if v2 == v1 {
		t.Fatal("version unchanged after Update")
	}
	got := map[string]*discoveryv3.DiscoveryResponse{}
	for len(got) < 3 {
		r := c.recv()
		if r.VersionInfo != v2 {
			t.Fatalf("%s: version %s, want %s", r.TypeUrl, r.VersionInfo, v2)
		}
		got[r.TypeUrl] = r
	}
	if err := got[resource.RouteType].Resources[0].UnmarshalTo(rc); err != nil || len(rc.VirtualHosts) != 3 {
		t.Fatalf("after update: %d virtual hosts, %v", len(rc.VirtualHosts), err)
	}

	// Envoy rejects the new listeners: a NACK names the old version.
	c.send(&discoveryv3.DiscoveryRequest{
		TypeUrl: resource.ListenerType, VersionInfo: v1, ResponseNonce: got[resource.ListenerType].Nonce,
		ErrorDetail: &status.Status{Code: 3, Message: "bad listener"},
	})
	waitFor(t, func() bool {
		return testutil.ToFloat64(s.m.nacks.WithLabelValues("envoy-from-elsewhere", resource.ListenerType)) == 1
	})
	if testutil.ToFloat64(s.m.streams) != 1 {
		t.Errorf("kailash_xds_streams = %v, want 1", testutil.ToFloat64(s.m.streams))
	}

	// Telemetry over HTTP.
	body := httpGet(t, "http://"+s.HTTPAddr()+"/readyz", http.StatusOK)
	if !strings.Contains(body, "ready") {
		t.Errorf("/readyz: %q", body)
	}
	metrics := httpGet(t, "http://"+s.HTTPAddr()+"/metrics", http.StatusOK)
	for _, want := range []string{
		"kailash_xds_snapshot_version 2",
		"kailash_xds_snapshots_total 2",
		`kailash_xds_nacks_total{node="envoy-from-elsewhere",type_url="type.googleapis.com/envoy.config.listener.v3.Listener"} 1`,
		`kailash_xds_acks_total{node="envoy-from-elsewhere",type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster"} 1`,
		"kailash_xds_streams 1",
		"kailash_xds_config_rejected_total 0",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// /debug/status: the node, what it acked, the NACK with the version
	// it refused.
	var rep struct {
		Snapshot struct{ Version string }
		Envoys   struct {
			Count int
			List  []struct {
				NodeID       string `json:"node_id"`
				AckedVersion string `json:"acked_version"`
				Acked        map[string]string
				InSync       bool `json:"in_sync"`
				ACKs, NACKs  int
				LastNACK     *struct {
					TypeURL          string `json:"type_url"`
					Version, Message string
				} `json:"last_nack"`
			}
		}
	}
	if err := json.Unmarshal([]byte(httpGet(t, "http://"+s.HTTPAddr()+"/debug/status", http.StatusOK)), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Snapshot.Version != v2 || rep.Envoys.Count != 1 || len(rep.Envoys.List) != 1 {
		t.Fatalf("status: snapshot %q (want %q), envoys %+v", rep.Snapshot.Version, v2, rep.Envoys)
	}
	e := rep.Envoys.List[0]
	if e.NodeID != "envoy-from-elsewhere" || e.AckedVersion != v1 || e.Acked[resource.RouteType] != v1 || e.InSync || e.ACKs != 3 || e.NACKs != 1 {
		t.Errorf("status envoy: %+v (want 3 ACKs of %s, not in sync with %s)", e, v1, v2)
	}
	if n := e.LastNACK; n == nil || n.Message != "bad listener" || n.Version != v2 || n.TypeURL != resource.ListenerType {
		t.Errorf("last NACK: %+v, want bad listener refusing %s", n, v2)
	}

	// Shutdown with the stream still open: Serve returns, the stream ends.
	// (The NACK named an old version, so a listener response may be queued
	// before the end of the stream.)
	stop()
	for i := 0; ; i++ {
		if _, err := c.stream.Recv(); err != nil {
			break
		}
		if i == 3 {
			t.Fatal("stream still open after Serve returned")
		}
	}
}

// TestDeltaADS: the incremental protocol gets the same resources.
func TestDeltaADS(t *testing.T) {
	s := newServer(t, testConfig())
	serve(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(dial(t, s.GRPCAddr())).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "delta-envoy"}, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if r.TypeUrl != resource.ClusterType || len(r.Resources) != 2 {
		t.Fatalf("delta CDS: %s, %d resources", r.TypeUrl, len(r.Resources))
	}
}

// TestDeltaReconnectWithManyResources: an Envoy reconnecting holding
// 100,000 resources sends their versions in its first request (~18 MB,
// over gRPC's default 4 MiB limit); it is answered, with only what it
// lacks, not refused.
func TestDeltaReconnectWithManyResources(t *testing.T) {
	s := newServer(t, testConfig())
	serve(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(dial(t, s.GRPCAddr())).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]string{}
	for i := range 100000 {
		known[fmt.Sprintf("route-config-t%05d", i)] = strings.Repeat("0", 64)
	}
	req := &discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "delta-envoy"}, TypeUrl: resource.ClusterType, InitialResourceVersions: known}
	if err := st.Send(req); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil {
		t.Fatalf("reconnect with %d known resources: %v", len(known), err)
	}
	// Wildcard: the two clusters it lacks, and every name it holds that
	// the snapshot has not, removed.
	if r.TypeUrl != resource.ClusterType || len(r.Resources) != 2 || len(r.RemovedResources) != len(known) {
		t.Fatalf("delta CDS: %s, %d resources, %d removed", r.TypeUrl, len(r.Resources), len(r.RemovedResources))
	}
}

func TestServeStopsWithoutClients(t *testing.T) {
	before := runtime.NumGoroutine()
	s := newServer(t, testConfig())
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	waitFor(t, func() bool {
		resp, err := client.Get("http://" + s.HTTPAddr() + "/healthz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if err := s.Serve(context.Background()); err == nil {
		t.Fatal("second Serve: expected an error")
	}
	// No goroutine outlives Serve.
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func httpGet(t *testing.T, url string, want int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if resp.StatusCode != want {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestDeltaPerTenantEdit: with per-tenant routes over delta ADS, an edit of
// one tenant sends that tenant's route configuration and nothing else, and
// the per-resource versions the control plane gives are those of its
// digests (an unchanged tenant keeps its version).
func TestDeltaPerTenantEdit(t *testing.T) {
	cfg := testConfig()
	cfg.Envoy.Routes = config.RoutesPerTenant
	cfg.Tenants = nil
	var names []string
	for i := range 50 {
		id := fmt.Sprintf("t%02d", i)
		cfg.Tenants = append(cfg.Tenants, config.Tenant{ID: id, Domains: []string{id + ".localhost"}})
		names = append(names, translate.TenantRouteConfigName(id))
	}
	s := newServer(t, cfg)
	serve(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(dial(t, s.GRPCAddr())).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	recv := func() *discoveryv3.DeltaDiscoveryResponse {
		t.Helper()
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce}); err != nil {
			t.Fatal(err)
		}
		return r
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "delta-envoy"}, TypeUrl: resource.ScopedRouteType}); err != nil {
		t.Fatal(err)
	}
	if r := recv(); len(r.Resources) != 50 {
		t.Fatalf("scopes: %d, want 50", len(r.Resources))
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.RouteType, ResourceNamesSubscribe: names}); err != nil {
		t.Fatal(err)
	}
	first := recv()
	if first.TypeUrl != resource.RouteType || len(first.Resources) != 50 {
		t.Fatalf("routes: %s %d, want 50", first.TypeUrl, len(first.Resources))
	}
	// The versions the cache compares (the translator's digests).
	versionMap := func() map[string]string {
		t.Helper()
		snap, err := s.cache.GetSnapshot("delta-envoy")
		if err != nil {
			t.Fatal(err)
		}
		vm := snap.GetVersionMap(resource.RouteType)
		if len(vm) != 50 {
			t.Fatalf("version map has %d route configurations", len(vm))
		}
		return vm
	}
	before := versionMap()

	next := *cfg
	next.Tenants = append([]config.Tenant(nil), cfg.Tenants...)
	off := false
	next.Tenants[17].Active = &off
	if err := s.Update(&next); err != nil {
		t.Fatal(err)
	}
	r := recv()
	if r.TypeUrl != resource.RouteType || len(r.Resources) != 1 || r.Resources[0].Name != names[17] || len(r.RemovedResources) != 0 {
		t.Fatalf("after a one-tenant edit: %s, %d resources %v, removed %v", r.TypeUrl, len(r.Resources), r.Resources, r.RemovedResources)
	}
	// Every other tenant keeps its version; the edited one gets another.
	after := versionMap()
	for _, name := range names {
		if changed := after[name] != before[name]; changed != (name == names[17]) {
			t.Errorf("%s: version %q → %q", name, before[name], after[name])
		}
	}
}
