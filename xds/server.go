// Package xds is kailash's control plane: it translates the config (package
// translate), keeps one consistent snapshot of Envoy resources per node and
// serves it over ADS, with gRPC health on the same port and /metrics,
// /healthz and /readyz on an optional HTTP port.
//
// A config that fails to translate or to form a consistent snapshot never
// replaces the last good snapshot; it is counted and logged.
package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/fswatch"
	"github.com/kailash-gw/kailash/internal/mtls"
	"github.com/kailash-gw/kailash/internal/status"
	"github.com/kailash-gw/kailash/internal/telemetry"
	"github.com/kailash-gw/kailash/xds/translate"
)

// shutdownGrace bounds GracefulStop before open streams are cut.
const shutdownGrace = 5 * time.Second

// maxRequestBytes bounds one discovery request. gRPC's default, 4 MiB, is
// too small for an Envoy that reconnects holding many resources: its
// first request lists every one with its version (initial_resource_versions:
// ~18 MB for 100,000 route configurations, twice that for their 200,000
// scopes), and refused, it reconnects and is refused again, forever.
const maxRequestBytes = 256 << 20

// keepaliveTimeout is how long a keepalive ping may go unanswered before
// the connection is closed. Envoy answers pings on its main thread, the
// one that applies xDS: at 100,000 tenants one response (every route
// configuration) keeps it busy for tens of seconds, and a 5 s timeout cut
// the stream mid-sync (Envoy then reconnected and started over).
const keepaliveTimeout = 2 * time.Minute

// Options tune a Server.
type Options struct {
	// Logger receives the server's logs; nil means slog.Default().
	Logger *slog.Logger
	// AckGrace is how long a published snapshot may stay unacknowledged by
	// every connected Envoy before /readyz fails (DefaultAckGrace when 0).
	AckGrace time.Duration
	// Now is the clock of publish times and the readiness grace (time.Now
	// when nil).
	Now func() time.Time
}

// Server is the ADS control plane. Create it with New, run it with Serve, and
// push new configs with Update (safe for concurrent use).
type Server struct {
	log *slog.Logger
	// cache serves SotW streams and fetches (every node has its snapshot);
	// delta serves delta streams from the changes between snapshots and
	// hands SotW to cache (deltacache.go).
	cache cachev3.SnapshotCache
	delta *deltaCache
	reg   *prometheus.Registry
	m     *metrics

	grpcLn net.Listener
	httpLn net.Listener // nil when the config has no xds.http

	started atomic.Bool // Serve (or Close) was called; listeners are owned by it

	certs *fswatch.Watcher // follows the certificate files of cfg and of tls

	// tls is the ADS port's mutual TLS (xds.tls); nil serves plaintext.
	// Its files are those of the config New was given; their contents
	// reload with the tenants' certificates.
	tls *mtls.Server
	// refused counts streams and fetches refused because the node id does
	// not match the client certificate.
	refused prometheus.Counter
	// peers are the verified client identities of open streams (when
	// node ids are bound to certificates), by stream id.
	peers sync.Map // int64 → *streamPeer

	// ready are the /readyz checks (readiness.go), ackGrace and now their
	// grace and clock.
	ready    *telemetry.Readiness
	ackGrace time.Duration
	now      func() time.Time

	// track follows the connected Envoys (ACKs, NACKs); served is the
	// config of the snapshot in force; reloadConfig and reloadCerts are
	// the reloaders' last outcomes (status.go).
	track        *tracker
	served       atomic.Pointer[config.Config]
	reloadConfig *status.Reloader
	reloadCerts  *status.Reloader

	// updMu serialises whole updates (read files, translate, publish), so a
	// certificate reload can never publish an older config than Update.
	updMu sync.Mutex
	cfg   *config.Config // the config of the current snapshot; guarded by updMu
	// tc holds the per-tenant pieces of the last translation, so a
	// one-tenant edit re-translates and re-hashes that tenant only; guarded
	// by updMu.
	tc translate.Cache

	// mu guards the fields below and serialises SetSnapshot calls, so a node
	// seen for the first time can never receive an older snapshot than the
	// one Update just published.
	mu      sync.Mutex
	nodes   map[string]struct{} // every node id known: configured or seen on a stream
	snap    *snapshot           // last good snapshot; never nil after New
	seq     uint64              // snapshots published by this process (a metric)
	hash    string              // hash of snap's resources
	version string              // snap's version: its resources' hash (prefix)
	pubAt   time.Time           // when snap was published
}

// New translates cfg into the first snapshot and binds the xDS gRPC address
// and, when set, the HTTP address (so callers know the ports are taken).
// Nothing is served until Serve.
func New(cfg *config.Config, opts Options) (*Server, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	if cfg == nil {
		return nil, errors.New("xds: nil config")
	}
	certs, err := fswatch.New(fswatch.Options{})
	if err != nil {
		return nil, fmt.Errorf("xds: certificate watcher: %w", err)
	}
	reg := telemetry.NewRegistry()
	sotw := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, cacheLogger(logger.With("component", "xds.cache")))
	s := &Server{
		log:   logger.With("component", "xds"),
		cache: sotw,
		delta: newDeltaCache(sotw),
		reg:   reg,
		m:     newMetrics(reg),
		nodes: map[string]struct{}{},
		certs: certs,
		cfg:   cfg,

		reloadConfig: status.NewReloader("config"),
		reloadCerts:  status.NewReloader("certificates"),

		ackGrace: opts.AckGrace,
		now:      opts.Now,
	}
	if s.ackGrace <= 0 {
		s.ackGrace = DefaultAckGrace
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.ready = s.readiness()
	reg.MustRegister(s.ready)
	s.track = newTracker(s.m.acks, s.m.nacks)
	s.served.Store(cfg)
	if cfg.Envoy.NodeID != "" {
		s.nodes[cfg.Envoy.NodeID] = struct{}{}
	}
	fail := func(err error) (*Server, error) {
		_ = certs.Close()
		if s.grpcLn != nil {
			_ = s.grpcLn.Close()
		}
		return nil, fmt.Errorf("xds: %w", err)
	}
	s.refused = prometheus.NewCounter(prometheus.CounterOpts{Name: "kailash_xds_streams_refused_total",
		Help: "xDS streams and fetches refused because the node id is not one the client certificate may claim."})
	reg.MustRegister(s.refused)
	if s.tls, err = mtls.NewServer(cfg, "xds.tls", cfg.XDS.TLS, s.log); err != nil {
		return fail(err)
	}
	if s.tls != nil {
		reg.MustRegister(s.tls.Collector())
	}
	p, err := s.prepare(cfg, false)
	if err != nil {
		return fail(err)
	}
	s.mu.Lock()
	s.publishLocked(p)
	s.mu.Unlock()
	if err := certs.Follow(s.watchDirs(cfg)); err != nil {
		return fail(err)
	}
	s.grpcLn, err = net.Listen("tcp", cfg.XDS.GRPC.String())
	if err != nil {
		return fail(fmt.Errorf("xds.grpc: %w", err))
	}
	if !cfg.XDS.HTTP.IsZero() {
		s.httpLn, err = net.Listen("tcp", cfg.XDS.HTTP.String())
		if err != nil {
			return fail(fmt.Errorf("xds.http: %w", err))
		}
	}
	s.log.Info("xds snapshot ready", "version", s.version, "tenants", len(cfg.Tenants),
		"grpc", s.grpcLn.Addr().String(), "http", s.HTTPAddr(), "mtls", s.tls != nil)
	return s, nil
}

// GRPCAddr is the bound ADS address (useful with port 0).
func (s *Server) GRPCAddr() string { return s.grpcLn.Addr().String() }

// HTTPAddr is the bound metrics/health address, or "" when there is none.
func (s *Server) HTTPAddr() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// Version is the version of the snapshot being served.
func (s *Server) Version() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// Registry is the server's Prometheus registry (served on /metrics).
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Update translates cfg and, if it forms a consistent snapshot, publishes it
// to every known node under a new version. On any error the last good
// snapshot keeps serving, kailash_xds_config_rejected_total is incremented,
// and the error is returned. A config whose resources are identical to the
// current ones publishes nothing.
//
// Changes to xds.grpc and xds.http need a restart; they are logged.
//
// The tenants' certificate and key files are read here, and their
// directories watched: a changed certificate is published the same way,
// without a config change.
func (s *Server) Update(cfg *config.Config) error {
	s.updMu.Lock()
	defer s.updMu.Unlock()
	err := s.update(cfg, true)
	s.reloadConfig.Record(err)
	if err != nil {
		s.m.rejected.Inc()
		s.log.Error("config rejected; last good snapshot keeps serving", "version", s.Version(), "err", err)
	}
	return err
}

// reloadCertificates re-reads the current config's certificates and
// publishes them if they changed. A pair caught half-written fails the key
// check and is rejected like a bad config; the next event retries.
func (s *Server) reloadCertificates() {
	s.updMu.Lock()
	defer s.updMu.Unlock()
	if s.tls != nil {
		if _, err := s.tls.Reload(); err != nil {
			s.m.rejected.Inc() // logged by Reload; the last good pair serves
			s.reloadCerts.Record(fmt.Errorf("xds.tls: %w", err))
			return
		}
	}
	err := s.update(s.cfg, false)
	s.reloadCerts.Record(err)
	if err != nil {
		s.m.rejected.Inc()
		s.log.Error("certificates rejected; last good snapshot keeps serving", "version", s.Version(), "err", err)
	}
}

// update does Update's work (Prepare and commit, in one step); the caller
// holds s.updMu. patch: see prepare (a certificate reload re-reads every
// file, so it never patches).
func (s *Server) update(cfg *config.Config, patch bool) error {
	p, err := s.prepare(cfg, patch)
	if err != nil {
		return fmt.Errorf("xds: %w", err)
	}
	s.commit(p)
	return nil
}

// addNodeLocked records a node id and gives it the current snapshot. The
// caller holds s.mu.
func (s *Server) addNodeLocked(node string) {
	if _, ok := s.nodes[node]; ok {
		return
	}
	s.nodes[node] = struct{}{}
	s.m.nodes.Set(float64(len(s.nodes)))
	if s.snap == nil {
		return
	}
	if err := s.cache.SetSnapshot(context.Background(), node, s.snap); err != nil {
		s.log.Error("cannot set snapshot for new node", "node", node, "err", err)
		return
	}
	s.log.Info("xds node connected", "node", node, "version", s.version)
}

// seeNode is called for every discovery request's node id.
func (s *Server) seeNode(node string) {
	if node == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addNodeLocked(node)
}

// Serve serves ADS (and the LDS/RDS/CDS/EDS/SDS services and gRPC health) on the
// gRPC listener and telemetry on the HTTP listener until ctx is cancelled,
// then stops gracefully (open streams are cut after 5s) and returns nil. It
// returns an error if a listener fails. Every goroutine it starts has ended
// when it returns. Serve may be called once.
func (s *Server) Serve(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("xds: Serve called twice or after Close")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	xs := serverv3.NewServer(ctx, s.delta, &callbacks{s: s})
	creds := insecure.NewCredentials()
	if s.tls != nil {
		creds = s.tls.Credentials()
	}
	gs := grpc.NewServer(
		grpc.Creds(creds),
		grpc.MaxConcurrentStreams(1<<20),
		grpc.MaxRecvMsgSize(maxRequestBytes),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: keepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 30 * time.Second, PermitWithoutStream: true}),
	)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, xs)
	listenerservice.RegisterListenerDiscoveryServiceServer(gs, xs)
	routeservice.RegisterRouteDiscoveryServiceServer(gs, xs)
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, xs)
	endpointservice.RegisterEndpointDiscoveryServiceServer(gs, xs)
	secretservice.RegisterSecretDiscoveryServiceServer(gs, xs)

	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := telemetry.ServeGRPC(ctx, s.grpcLn, gs, telemetry.GRPCOptions{
			Name:   "xds",
			Health: []string{"", discoveryv3.AggregatedDiscoveryService_ServiceDesc.ServiceName},
			Grace:  shutdownGrace,
			Log:    s.log,
		})
		if err != nil {
			errc <- fmt.Errorf("xds: grpc: %w", err)
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.certs.Run(ctx, s.reloadCertificates)
	}()
	if s.httpLn != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mux := telemetry.NewMux(s.reg, s.ready)
			mux.Handle("GET "+status.Path, status.Handler(s.Status))
			if err := telemetry.ServeHTTP(ctx, s.httpLn, mux); err != nil {
				errc <- fmt.Errorf("xds: http: %w", err)
			}
		}()
	}
	s.log.Info("xds serving", "grpc", s.GRPCAddr(), "http", s.HTTPAddr())

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		s.log.Error("xds server failed", "err", err)
	}
	cancel() // ends ADS streams, the gRPC server (gracefully) and the HTTP server
	wg.Wait()
	_ = s.certs.Close()
	close(errc)
	if err == nil {
		err = <-errc // a failure that raced with cancellation
	}
	s.log.Info("xds stopped")
	return err
}

// Close releases the listeners of a Server whose Serve was never called.
// After Serve has started it does nothing: Serve closes them on return.
func (s *Server) Close() error {
	if !s.started.CompareAndSwap(false, true) {
		return nil
	}
	err := errors.Join(s.grpcLn.Close(), s.certs.Close())
	if s.httpLn != nil {
		err = errors.Join(err, s.httpLn.Close())
	}
	return err
}

// resourceTypes are the types a snapshot carries, in the order the
// snapshot's hash covers them.
var resourceTypes = []resource.Type{
	resource.ListenerType, resource.RouteType, resource.ClusterType, resource.SecretType, resource.ScopedRouteType,
}

// resourcesByType is res as the snapshot cache takes it.
func resourcesByType(res *translate.Resources) map[resource.Type][]types.Resource {
	return map[resource.Type][]types.Resource{
		resource.ListenerType:    res.Listeners,
		resource.RouteType:       res.Routes,
		resource.ClusterType:     res.Clusters,
		resource.SecretType:      res.Secrets,
		resource.ScopedRouteType: res.ScopedRoutes,
	}
}

// watchDirs are the directories to follow for cfg: its tenants'
// certificates and the ADS port's own files.
func (s *Server) watchDirs(cfg *config.Config) []string {
	dirs := certDirs(cfg)
	if s.tls != nil {
		dirs = append(dirs, s.tls.Dirs()...)
	}
	return dirs
}

// tlsSection is the xds.tls in force (zero when plaintext).
func (s *Server) tlsSection() config.ServerTLS {
	if s.tls == nil {
		return config.ServerTLS{}
	}
	return s.tls.Section()
}

// sameServerTLS reports whether two sections name the same files and node
// binding (their lines may differ).
func sameServerTLS(a, b config.ServerTLS) bool {
	a.Line, b.Line = 0, 0
	return reflect.DeepEqual(a, b)
}
