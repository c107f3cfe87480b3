package extauthz

// countCheck counts one Check in kailash_authz_checks_total. The two
// commonest outcomes use counters bound once in initMetrics, which saves
// hashing the labels and a map lookup per request.
func (s *Server) countCheck(result, reason string) {
	switch {
	case reason == "policy" && result == ResultAllow:
		s.checksAllow.Inc()
	case reason == "policy" && result == ResultDeny:
		s.checksDeny.Inc()
	default:
		s.checks.WithLabelValues(result, reason).Inc()
	}
}
