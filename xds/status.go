package xds

import (
	"time"

	"github.com/kailash-gw/kailash/internal/status"
)

// Status is the control plane's /debug/status report: build, config hash,
// tenants, the snapshot served, the connected Envoys (acked version and
// last NACK of each) and the reloaders.
func (s *Server) Status() status.Report {
	cfg := s.served.Load()
	s.mu.Lock()
	snap := &status.Snapshot{Version: s.version, PublishedAt: s.pubAt, Resources: map[string]int{}}
	if s.snap != nil {
		for _, typ := range resourceTypes {
			snap.Resources[typ] = len(s.snap.GetResources(typ))
		}
	}
	s.mu.Unlock()
	return status.Report{
		Component:  "xds",
		Time:       time.Now().UTC(),
		Build:      status.BuildOf(),
		ConfigHash: cfg.Digest,
		Tenants:    status.TenantsOf(cfg),
		Snapshot:   snap,
		Envoys:     s.track.envoys(snap.Version),
		Reloaders:  status.Reloads(s.reloadConfig, s.reloadCerts),
	}
}

// ConfigReloaded records the outcome of a config file revision (nil: put
// in force everywhere) for the status report; the watcher calls it.
func (s *Server) ConfigReloaded(err error) { s.reloadConfig.Record(err) }
