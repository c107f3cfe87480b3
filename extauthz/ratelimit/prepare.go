package ratelimit

import (
	"errors"

	"github.com/kailash-gw/kailash/internal/config"
)

// Prepare builds the quotas of cfg; the commit it returns swaps them in
// (requests in flight keep the rules they started with) and cannot fail.
// Backend and addresses change only on restart. See config.Component.
func (s *Server) Prepare(cfg *config.Config) (commit func(), err error) {
	if cfg == nil {
		return nil, errors.New("nil config")
	}
	r := NewRules(cfg)
	return func() {
		s.rules.Store(r)
		s.m.rules.Set(float64(r.Len()))
	}, nil
}
