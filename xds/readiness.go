package xds

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kailash-gw/kailash/internal/telemetry"
)

// DefaultAckGrace is how long a newly published snapshot may go without
// any connected Envoy acknowledging it before /readyz says so.
const DefaultAckGrace = 30 * time.Second

// readiness is the control plane's /readyz:
//
//   - snapshot: a config was translated into a consistent snapshot (always
//     true once New returned: a control plane that cannot build its first
//     snapshot does not start);
//   - envoy_ack: some connected Envoy acknowledged the snapshot served, or
//     it was published less than the grace ago, or no Envoy is connected
//     (see checkAcked).
func (s *Server) readiness() *telemetry.Readiness {
	return telemetry.NewReadiness("xds",
		telemetry.Check{Name: "snapshot", Run: func(context.Context) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.snap == nil {
				return errors.New("no snapshot yet")
			}
			return nil
		}},
		telemetry.Check{Name: "envoy_ack", Run: func(context.Context) error { return s.checkAcked() }},
	)
}

// Readiness is the server's readiness checks (its /readyz).
func (s *Server) Readiness() *telemetry.Readiness { return s.ready }

// checkAcked is the envoy_ack readiness check. With no Envoy connected the
// control plane is ready: Envoys wait for a ready control plane before
// they connect, so failing here would keep a fleet from ever starting.
// With Envoys connected, it fails when none of them has acknowledged the
// snapshot being served for longer than the grace after it was published
// (every Envoy rejects it, or none answers).
func (s *Server) checkAcked() error {
	s.mu.Lock()
	version, at := s.version, s.pubAt
	s.mu.Unlock()
	envoys := s.track.envoys(version)
	if envoys.Count == 0 {
		return nil
	}
	nack := ""
	for _, e := range envoys.List {
		if e.AckedVersion == version {
			return nil
		}
		if e.LastNACK != nil && nack == "" {
			nack = e.NodeID + ": " + e.LastNACK.Message
		}
	}
	age := s.now().Sub(at)
	if age < s.ackGrace {
		return nil
	}
	msg := fmt.Sprintf("no envoy has acked snapshot %s (published %s ago; %d connected)", version, age.Round(time.Second), envoys.Count)
	if nack != "" {
		msg += "; last NACK from " + nack
	}
	return errors.New(msg)
}
