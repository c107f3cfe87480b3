package extauthz

import (
	"net/http"
)

// opaHealth is OPA's GET /health on the HTTP address, for probes written
// for `opa run --server`: 200 {} when the server can answer, else 500
// {"error": ...}. ?bundles asks whether the bundle is activated and
// ?plugins whether every plugin is up; here the server only starts with
// an active bundle (the first download or the persisted one) and its only
// plugins (the Check service, decision logs) run with it, so both hold
// whenever a policy is loaded. /readyz (draining included) stays the probe
// for Kailash deployments.
func (s *Server) opaHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if s.snap.Load() == nil || s.engine == nil {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"error":"not ready"}` + "\n"))
		return
	}
	_, _ = w.Write([]byte("{}\n"))
}
