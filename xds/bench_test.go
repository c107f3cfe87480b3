package xds

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/xds/translate"
)

// benchConfig has n tenants with two domains each.
func benchConfig(n int) *config.Config {
	cfg := &config.Config{
		Envoy:  config.Envoy{Listen: config.MustHostPort("127.0.0.1:8080"), NodeID: "kailash-envoy"},
		XDS:    config.XDS{GRPC: config.MustHostPort("127.0.0.1:0")},
		Authz:  config.Authz{GRPC: config.MustHostPort("127.0.0.1:9191"), Timeout: 500 * time.Millisecond, MaxRequestBytes: 8192},
		Runner: config.Runner{HTTP: config.MustHostPort("127.0.0.1:8081")},
	}
	for i := range n {
		id := fmt.Sprintf("tenant-%04d", i)
		cfg.Tenants = append(cfg.Tenants, config.Tenant{
			ID:      id,
			Domains: []string{id + ".example.com", "*." + id + ".example.net"},
		})
	}
	return cfg
}

func BenchmarkTranslate(b *testing.B) {
	for _, n := range []int{2, 1000} {
		b.Run(fmt.Sprintf("tenants=%d", n), func(b *testing.B) {
			cfg := benchConfig(n)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := translate.Translate(cfg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSnapshot(b *testing.B) {
	cfg := benchConfig(1000)
	b.ReportAllocs()
	for b.Loop() {
		res, err := translate.Translate(cfg)
		if err != nil {
			b.Fatal(err)
		}
		snap, err := cachev3.NewSnapshot("1", map[resource.Type][]types.Resource{
			resource.ListenerType: res.Listeners,
			resource.RouteType:    res.Routes,
			resource.ClusterType:  res.Clusters,
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := snap.Consistent(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpdate is the whole Update path at 1,000 tenants: translate,
// hash, snapshot, consistency check, SetSnapshot (alternating two configs so
// every call publishes).
func BenchmarkUpdate(b *testing.B) {
	cfgs := []*config.Config{benchConfig(1000), benchConfig(1001)}
	s, err := New(cfgs[0], Options{Logger: discardLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if err := s.Update(cfgs[i%2]); err != nil {
			b.Fatal(err)
		}
	}
}

// edgeConfig10k has 10,000 tenants, each with CORS, an IP allowlist, a
// local bucket and global quotas; with per-tenant routes both domains are
// exact.
func edgeConfig10k(routes string) *config.Config {
	cfg := benchConfig(10000)
	cfg.Envoy.Routes = routes
	cfg.RateLimit.GRPC = config.MustHostPort("127.0.0.1:9193")
	for i := range cfg.Tenants {
		t := &cfg.Tenants[i]
		if routes == config.RoutesPerTenant {
			t.Domains[1] = "www." + t.ID + ".example.net"
		}
		t.CORS = config.CORS{AllowOrigins: []string{"https://app." + t.ID + ".example.com"}}
		t.IPAllowlist = []config.Prefix{config.MustPrefix("10.0.0.0/8")}
		t.Limits = config.TenantLimits{RequestsPerSecond: 100, Burst: 200, MaxAPICallsPerDay: 1e6, PerUserPerHour: 1000}
	}
	return cfg
}

// BenchmarkEdit10k is the control plane's share of a one-tenant edit at
// 10,000 tenants: Update (cached translation, hashing, snapshot, version
// map, SetSnapshot), alternating one tenant's active flag.
func BenchmarkEdit10k(b *testing.B) {
	for _, routes := range []string{config.RoutesPerTenant, config.RoutesSingle} {
		b.Run("routes="+routes, func(b *testing.B) {
			cfg := edgeConfig10k(routes)
			edited := *cfg
			edited.Tenants = append([]config.Tenant(nil), cfg.Tenants...)
			off := false
			edited.Tenants[5000].Active = &off
			cfgs := []*config.Config{cfg, &edited}
			s, err := New(cfg, Options{Logger: discardLogger()})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				if err := s.Update(cfgs[i%2]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTranslate10k is translation plus snapshot for 10,000 tenants,
// each with CORS, an IP allowlist, a local bucket and global quotas.
func BenchmarkTranslate10k(b *testing.B) {
	cfg := edgeConfig10k(config.RoutesSingle)
	b.ReportAllocs()
	for b.Loop() {
		res, err := translate.Translate(cfg)
		if err != nil {
			b.Fatal(err)
		}
		snap, err := cachev3.NewSnapshot("1", map[resource.Type][]types.Resource{
			resource.ListenerType: res.Listeners,
			resource.RouteType:    res.Routes,
			resource.ClusterType:  res.Clusters,
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := snap.Consistent(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFanout100 is the control plane's cost of a one-tenant edit at
// 1,000 tenants with 100 Envoy nodes connected (in-process gRPC ADS clients
// that ack every response without decoding the resources), per change:
// wall time until every node has the change and CPU time of the whole
// process. Per-tenant routes over delta send each node one route
// configuration; one table over state of the world sends (and encodes) the
// whole table for every node.
func BenchmarkFanout100(b *testing.B) {
	const nodes, tenants = 100, 1000
	for _, mode := range []struct{ routes, protocol string }{
		{config.RoutesPerTenant, config.XDSDelta},
		{config.RoutesSingle, config.XDSSotW},
	} {
		b.Run(mode.routes+"/"+mode.protocol, func(b *testing.B) {
			cfg := benchConfig(tenants)
			cfg.Envoy.Routes = mode.routes
			if mode.routes == config.RoutesPerTenant {
				for i := range cfg.Tenants {
					cfg.Tenants[i].Domains[1] = "www." + cfg.Tenants[i].ID + ".example.net"
				}
			}
			edited := *cfg
			edited.Tenants = append([]config.Tenant(nil), cfg.Tenants...)
			off := false
			edited.Tenants[tenants/2].Active = &off
			cfgs := []*config.Config{cfg, &edited}
			s, err := New(cfg, Options{Logger: discardLogger()})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.Serve(ctx) }()
			defer func() { cancel(); <-done }()
			var routeNames []string
			if mode.routes == config.RoutesPerTenant {
				for _, t := range cfg.Tenants {
					routeNames = append(routeNames, translate.TenantRouteConfigName(t.ID))
				}
			} else {
				routeNames = []string{translate.RouteConfigName}
			}
			got := make(chan int, nodes*4) // resources per route response
			for n := range nodes {
				conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close()
				node := &corev3.Node{Id: fmt.Sprintf("fanout-%d", n)}
				ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
				// recv waits for a route response, acks it and returns
				// how many resources it carried.
				var recv func() (int, error)
				if mode.protocol == config.XDSDelta {
					st, err := ads.DeltaAggregatedResources(ctx)
					if err == nil {
						err = st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.RouteType, ResourceNamesSubscribe: routeNames})
					}
					if err != nil {
						b.Fatal(err)
					}
					recv = func() (int, error) {
						r, err := st.Recv()
						if err != nil {
							return 0, err
						}
						return len(r.Resources), st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce})
					}
				} else {
					st, err := ads.StreamAggregatedResources(ctx)
					if err == nil {
						err = st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.RouteType, ResourceNames: routeNames})
					}
					if err != nil {
						b.Fatal(err)
					}
					recv = func() (int, error) {
						r, err := st.Recv()
						if err != nil {
							return 0, err
						}
						return len(r.Resources), st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, ResourceNames: routeNames, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce})
					}
				}
				go func() {
					for {
						n, err := recv()
						if err != nil {
							return
						}
						got <- n
					}
				}()
			}
			wait := func() (resources int) {
				for range nodes {
					select {
					case n := <-got:
						resources += n
					case <-time.After(60 * time.Second):
						b.Fatal("not every node got the change within 60s")
					}
				}
				return resources
			}
			wait() // the initial state
			var ru0, ru1 syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			b.ResetTimer()
			i, sent := 0, 0
			for b.Loop() {
				i++
				if err := s.Update(cfgs[i%2]); err != nil {
					b.Fatal(err)
				}
				sent += wait()
			}
			b.StopTimer()
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) / time.Duration(i)
			b.ReportMetric(float64(cpu.Microseconds())/1000, "cpu-ms/change")
			b.ReportMetric(float64(sent)/float64(i*nodes), "resources/node")
		})
	}
}

// BenchmarkNew10k is a control plane's start at 10,000 tenants with every
// edge feature: translation, hashing, the first snapshot and its version
// map.
func BenchmarkNew10k(b *testing.B) {
	for _, routes := range []string{config.RoutesPerTenant, config.RoutesSingle} {
		b.Run("routes="+routes, func(b *testing.B) {
			cfg := edgeConfig10k(routes)
			b.ReportAllocs()
			for b.Loop() {
				s, err := New(cfg, Options{Logger: discardLogger()})
				if err != nil {
					b.Fatal(err)
				}
				s.Close()
			}
		})
	}
}
