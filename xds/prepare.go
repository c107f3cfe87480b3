package xds

import (
	"context"
	"errors"
	"fmt"
	"time"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"github.com/kailash-gw/kailash/internal/config"
)

// prepared is a config translated into a consistent snapshot, not yet
// published.
type prepared struct {
	cfg  *config.Config
	snap *cachev3.Snapshot // versions are set when it is published
	hash string
}

// Prepare reads the files cfg names, translates it and checks the snapshot
// it makes is consistent, without changing what is served; the commit it
// returns publishes that snapshot (nothing when the resources are the ones
// already served) and cannot fail. See config.Component.
func (s *Server) Prepare(cfg *config.Config) (commit func(), err error) {
	s.updMu.Lock()
	defer s.updMu.Unlock()
	p, err := s.prepare(cfg)
	if err != nil {
		return nil, err
	}
	return func() {
		s.updMu.Lock()
		defer s.updMu.Unlock()
		s.commit(p)
	}, nil
}

// ConfigRejected counts a config revision that was not applied
// (kailash_xds_config_rejected_total): refused here or by another component.
func (s *Server) ConfigRejected() { s.m.rejected.Inc() }

// prepare does Prepare's work; the caller holds s.updMu (for s.tc).
func (s *Server) prepare(cfg *config.Config) (*prepared, error) {
	if cfg == nil {
		return nil, errors.New("nil config")
	}
	start := time.Now()
	defer func() { s.m.build.Observe(time.Since(start).Seconds()) }()
	res, digests, err := translateCached(cfg, &s.tc)
	if err != nil {
		return nil, err
	}
	byType := resourcesByType(res)
	versions, hash, err := resourceVersions(byType, digests)
	if err != nil {
		return nil, err
	}
	snap, err := cachev3.NewSnapshot("pending", byType)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	// Delta xDS compares per-resource versions; the cache would encode and
	// hash every resource once per snapshot to get them. They are computed
	// already, from the translator's digests where it has them.
	snap.VersionMap = versions
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("snapshot is inconsistent: %w", err)
	}
	return &prepared{cfg: cfg, snap: snap, hash: hash}, nil
}

// commit publishes p; the caller holds s.updMu.
func (s *Server) commit(p *prepared) {
	cfg := p.cfg
	if cfg.XDS.GRPC.String() != s.GRPCAddr() || cfg.XDS.HTTP.String() != s.HTTPAddr() {
		s.log.Debug("xds addresses in the new config apply only after a restart",
			"grpc", cfg.XDS.GRPC, "http", cfg.XDS.HTTP)
	}
	s.mu.Lock()
	if cfg.Envoy.NodeID != "" {
		s.addNodeLocked(cfg.Envoy.NodeID)
	}
	s.publishLocked(p)
	s.mu.Unlock()
	if !sameServerTLS(cfg.XDS.TLS, s.tlsSection()) {
		s.log.Warn("xds.tls changes apply only after a restart; the files in force keep being followed")
	}
	s.cfg = cfg
	s.served.Store(cfg)
	if err := s.certs.Follow(s.watchDirs(cfg)); err != nil {
		// Published all the same; only later file changes may be missed.
		s.log.Warn("cannot watch certificate files; changes need a config reload", "err", err)
	}
}

// publishLocked makes p's snapshot the current one unless its resources
// are the ones served. The caller holds s.mu.
//
// The version is the resources' hash alone, never a counter of this
// process: replicas of the control plane reading the same config serve the
// same version whatever their history (restarts, edits seen), so an Envoy
// that moves from one to another is not sent everything again and
// dashboards compare them. kailash_xds_snapshot_version stays this
// process's count of publishes.
func (s *Server) publishLocked(p *prepared) {
	// p's certificate files were read and accepted, changed or not.
	s.m.certs.Set(float64(s.now().UnixNano()) / 1e9)
	if s.snap != nil && p.hash == s.hash {
		s.log.Debug("config unchanged; snapshot kept", "version", s.version)
		return
	}
	seq := s.seq + 1
	version := p.hash[:16]
	snap := p.snap
	for i := range snap.Resources {
		snap.Resources[i].Version = version
	}
	// From here on the snapshot is the current one: the cache stores it
	// before answering watches, so even a failed SetSnapshot (only possible
	// when its context ends) has already published it.
	s.snap, s.seq, s.hash, s.version, s.pubAt = snap, seq, p.hash, version, s.now().UTC()
	for node := range s.nodes {
		if err := s.cache.SetSnapshot(context.Background(), node, snap); err != nil {
			s.log.Error("cannot set snapshot for node", "node", node, "version", version, "err", err)
		}
	}
	s.m.snapshots.Inc()
	s.m.version.Set(float64(seq))
	s.log.Info("xds snapshot published", "version", version, "nodes", len(s.nodes))
}
