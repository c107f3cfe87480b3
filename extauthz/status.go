package extauthz

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/kailash-gw/kailash/internal/status"
	"github.com/kailash-gw/kailash/policies"
)

// reloaders are the authz server's reloaders other than the key sources
// (which keep their own state: oidc.Keys.Status).
type reloaders struct {
	config *status.Reloader // the config file (Update, or the watcher: ConfigReloaded)
	active *status.Reloader // the policy bundle
	shadow *status.Reloader // the shadow bundle; nil without one
	tls    *status.Reloader // authz.tls files; nil when plaintext
}

// policy is the reloader of the bundle named name ("active", "shadow").
func (r *reloaders) policy(name string) *status.Reloader {
	if name == "shadow" {
		return r.shadow
	}
	return r.active
}

// initReloaders makes the reloaders; New calls it once the engines and the
// TLS material are loaded.
func (s *Server) initReloaders() {
	s.reloaded = reloaders{config: status.NewReloader("config"), active: status.NewReloader("policy")}
	if s.shadow != nil {
		s.reloaded.shadow = status.NewReloader("policy (shadow)")
	}
	if s.tls != nil {
		r := status.NewReloader("certificates (authz.tls)")
		s.reloaded.tls = r
		s.tls.OnReject = r.Record
		s.tls.OnReload = func() { r.Record(nil) }
	}
}

// statusRoutes adds GET /debug/status to the admin mux.
func (s *Server) statusRoutes(mux *http.ServeMux) {
	mux.Handle("GET "+status.Path, status.Handler(s.Status))
}

// ConfigReloaded records the outcome of a config file revision (nil: put
// in force everywhere) for the status report; the watcher calls it.
func (s *Server) ConfigReloaded(err error) { s.reloaded.config.Record(err) }

// Status is the authz server's /debug/status report: build, config hash,
// tenants, the policy bundles in force and every reloader, the tenants'
// key sources (JWKS) included.
func (s *Server) Status() status.Report {
	snap := s.snap.Load()
	rep := status.Report{
		Component:  "authz",
		Time:       time.Now().UTC(),
		Build:      status.BuildOf(),
		ConfigHash: snap.cfg.Digest,
		Tenants:    status.TenantsOf(snap.cfg),
		Policy:     policyStatus(s.engine),
		Reloaders:  status.Reloads(s.reloaded.config, s.reloaded.active, s.reloaded.shadow, s.reloaded.tls),
	}
	if s.shadow != nil {
		rep.Shadow = policyStatus(s.shadow)
	}
	var keys []status.Reload
	for _, ik := range snap.issuers {
		k := ik.keys.Status()
		keys = append(keys, status.Reload{Name: "jwks " + status.RedactURL(k.URL) + " (" + k.Issuer + ")",
			LastOK: k.LastOK.UTC(), LastError: status.Cut(k.LastError), ErrorAt: k.ErrorAt.UTC(),
			Failures: k.Failures, Failing: k.Failing || !k.Ready})
	}
	slices.SortFunc(keys, func(a, b status.Reload) int { return strings.Compare(a.Name, b.Name) })
	for _, k := range keys {
		if len(rep.Reloaders) == status.MaxReloaders {
			break
		}
		rep.Reloaders = append(rep.Reloaders, k)
	}
	return rep
}

func policyStatus(e *policies.Engine) *status.Policy {
	return &status.Policy{Revision: e.Revision(), Source: status.RedactURL(e.Source()), Decision: e.Decision(),
		LoadedAt: e.LoadedAt().UTC(), DecisionCache: e.CachePlan()}
}
