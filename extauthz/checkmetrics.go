package extauthz

import "github.com/kailash-gw/kailash/policies"

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

// countCache counts what the decision cache did for one evaluation.
func (s *Server) countCache(info policies.EvalInfo) {
	switch info.Cache {
	case policies.CacheHit:
		s.cacheHits.Inc()
	case policies.CacheMiss:
		s.cacheMisses.Inc()
	case policies.CacheBypass:
		s.cacheBypass.WithLabelValues(info.Bypass).Inc()
	case policies.CacheOff:
		s.cacheBypass.WithLabelValues(policies.BypassDisabled).Inc()
	}
}
