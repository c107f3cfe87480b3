package api

import (
	"errors"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/workflow"
)

// Prepare checks the runner settings of cfg as New does and loads the shared
// workflows of runner.workflows, without changing what is served; the
// commit it returns swaps the shared workflows in and cannot fail. A file
// the runner would refuse at start (an unknown node type, a workflow that
// does not compile, an unreadable identity_jwks file) is refused here too,
// so a revision is never applied elsewhere and refused on the next restart.
// Limits, http_allow, identity and store settings are read only by New.
// See config.Component.
func (s *Server) Prepare(cfg *config.Config) (commit func(), err error) {
	if cfg == nil {
		return nil, errors.New("nil config")
	}
	var errs []error
	check := func(field string, types []string) {
		for _, t := range types {
			if !workflow.IsNodeType(t) {
				errs = append(errs, fmt.Errorf("%s: unknown node type %q (known: %s)", field, t, strings.Join(workflow.NodeTypes(), ", ")))
			}
		}
	}
	check("runner.limits.allowed_node_types", cfg.Runner.Limits.AllowedNodeTypes)
	for role, l := range cfg.Runner.RoleLimits {
		check(fmt.Sprintf("runner.role_limits.%s.allowed_node_types", role), l.AllowedNodeTypes)
	}
	if src := cfg.Runner.IdentityJWKS; src != "" && !strings.HasPrefix(src, "http://") && !strings.HasPrefix(src, "https://") {
		if _, err := newVerifier(cfg.Path(src), cfg.Runner.IdentityAudience); err != nil {
			errs = append(errs, fmt.Errorf("runner.identity_jwks: %w", err))
		}
	}
	wfs := map[string]*workflow.Workflow{}
	if cfg.Runner.Workflows != "" {
		w, err := workflow.LoadDir(cfg.Path(cfg.Runner.Workflows))
		if err != nil {
			errs = append(errs, fmt.Errorf("runner.workflows: %w", err))
		}
		wfs = w
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return func() {
		s.workflows.Store(&wfs)
		s.log.Info("runner config applied: shared workflows reloaded; limits, http_allow, identity and store settings apply after a restart",
			"workflows", len(wfs))
	}, nil
}

// Registry is the runner's Prometheus registry (served on /metrics).
func (s *Server) Registry() *prometheus.Registry { return s.reg }
