package xds

import (
	"context"
	"errors"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
)

// prepared is a config translated into a consistent snapshot, not yet
// published.
type prepared struct {
	cfg  *config.Config
	snap *snapshot // its version is set when it is published
	hash string
}

// Prepare reads the files cfg names, translates it and checks the snapshot
// it makes is consistent, without changing what is served; the commit it
// returns publishes that snapshot (nothing when the resources are the ones
// already served) and cannot fail. See config.Component.
func (s *Server) Prepare(cfg *config.Config) (commit func(), err error) {
	s.updMu.Lock()
	defer s.updMu.Unlock()
	p, err := s.prepare(cfg, true)
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

// prepare does Prepare's work; the caller holds s.updMu (for s.tc, s.cfg
// and s.snap). With patch, an edit of a few tenants is made from the
// snapshot served (patchTenants); otherwise, and when a patch cannot make
// it, the whole config is translated (reusing unchanged tenants' pieces
// from s.tc) and indexed.
func (s *Server) prepare(cfg *config.Config, patch bool) (*prepared, error) {
	if cfg == nil {
		return nil, errors.New("nil config")
	}
	start := time.Now()
	defer func() { s.m.build.Observe(time.Since(start).Seconds()) }()
	if patch {
		s.mu.Lock()
		base := s.snap
		s.mu.Unlock()
		snap, ok, err := patchTenants(s.cfg, cfg, base)
		if ok {
			s.m.builds.WithLabelValues("patch").Inc()
		}
		if err != nil {
			return nil, err
		}
		if ok {
			s.log.Debug("tenant edit patched into the snapshot", "took", time.Since(start))
			return &prepared{cfg: cfg, snap: snap, hash: snap.sum.hash()}, nil
		}
	}
	s.m.builds.WithLabelValues("full").Inc()
	res, digests, err := translateCached(cfg, &s.tc)
	if err != nil {
		return nil, err
	}
	snap, err := newSnapshot(res, digests)
	if err != nil {
		return nil, err
	}
	return &prepared{cfg: cfg, snap: snap, hash: snap.sum.hash()}, nil
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
	snap.version = version
	// From here on the snapshot is the current one: the cache stores it
	// before answering watches, so even a failed SetSnapshot (only possible
	// when its context ends) has already published it.
	s.snap, s.seq, s.hash, s.version, s.pubAt = snap, seq, p.hash, version, s.now().UTC()
	for node := range s.nodes {
		if err := s.cache.SetSnapshot(context.Background(), node, snap); err != nil {
			s.log.Error("cannot set snapshot for node", "node", node, "version", version, "err", err)
		}
	}
	s.delta.publish(snap, snap.from, snap.changes)
	snap.from, snap.changes = nil, nil
	s.m.snapshots.Inc()
	s.m.version.Set(float64(seq))
	s.log.Info("xds snapshot published", "version", version, "nodes", len(s.nodes))
}
