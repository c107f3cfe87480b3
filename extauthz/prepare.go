package extauthz

import (
	"errors"

	"github.com/kailash-gw/kailash/internal/config"
)

// Prepare builds everything cfg needs — the tenants' verifiers and key
// sources, the issuers, the login directories and SAML SPs — without
// changing what is served; the commit it returns puts it all in force at
// once and cannot fail. Listener addresses and policy settings are read
// only by New. See config.Component.
func (s *Server) Prepare(cfg *config.Config) (commit func(), err error) {
	if cfg == nil {
		return nil, errors.New("nil config")
	}
	snap, err := s.build(cfg)
	if err != nil {
		return nil, err
	}
	commitAuth := func() {}
	if s.auth != nil {
		if commitAuth, err = s.auth.Prepare(cfg); err != nil {
			return nil, err
		}
	}
	return func() {
		commitAuth()
		s.snap.Store(snap)
		s.startIssuers(snap)
		s.log.Info("authz config updated", "tenants", len(snap.tenants))
	}, nil
}

// ConfigRejected counts a config revision that was not applied
// (kailash_authz_config_rejected_total): refused here or by another
// component.
func (s *Server) ConfigRejected() { s.rejected.Inc() }
