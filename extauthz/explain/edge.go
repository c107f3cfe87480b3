package explain

import (
	"fmt"
	"strings"
)

// EdgeInput is what Envoy's access log says about an answer, and what the
// config says about its host.
type EdgeInput struct {
	Status   int
	Flags    string // Envoy's short response flags, comma separated (NR,RL,...)
	Details  string // response code details
	Host     string
	ClientIP string
	Tenant   string // the tenant serving Host ("" when none)
	Inactive bool   // Tenant is inactive
}

func hasFlag(flags, f string) bool {
	for _, x := range strings.Split(flags, ",") {
		if x == f {
			return true
		}
	}
	return false
}

// Edge names the edge check behind an answer and says what it means.
func Edge(in EdgeInput) *EdgeStep {
	e := &EdgeStep{Status: in.Status, ResponseFlags: in.Flags, Details: in.Details}
	d := in.Details
	switch {
	case strings.HasPrefix(d, "rbac_access_denied"):
		e.Check = "ip_allowlist"
		e.Meaning = fmt.Sprintf("the client address %s is not in tenant %s's ip_allowlist", in.ClientIP, in.Tenant)
	case d == "route_not_found" || hasFlag(in.Flags, "NR"):
		e.Check = "unknown_host"
		e.Meaning = fmt.Sprintf("no tenant serves the host %q", in.Host)
	case in.Inactive && d == "direct_response":
		e.Check = "inactive_tenant"
		e.Meaning = fmt.Sprintf("tenant %s is inactive: every request is refused", in.Tenant)
	case d == "local_rate_limited":
		e.Check = "local_rate_limit"
		e.Meaning = fmt.Sprintf("tenant %s's local rate limit (per Envoy, tenants[].rate_limit) is exhausted", in.Tenant)
	case d == "request_rate_limited" || hasFlag(in.Flags, "RL"):
		e.Check = "rate_limit"
		e.Meaning = "the rate-limit service answered OVER_LIMIT"
	case d == "rate_limiter_error" || hasFlag(in.Flags, "RLSE"):
		e.Check = "rate_limit_unavailable"
		e.Meaning = "the rate-limit service could not be reached or failed; ratelimit.fail_mode closed refuses the request"
	case strings.HasPrefix(d, "ext_authz_denied"):
		e.Check = "authz"
		e.Meaning = "ext_authz refused the request"
	case strings.HasPrefix(d, "ext_authz_error") || hasFlag(in.Flags, "UAEX"):
		e.Check = "authz_unavailable"
		e.Meaning = "ext_authz could not be reached, timed out or failed (Envoy fails closed)"
	case strings.HasPrefix(d, "cors"):
		e.Check = "cors"
		e.Meaning = "the CORS filter refused the request's origin or method"
	case d == "via_upstream":
		e.Check = "upstream"
		e.Meaning = fmt.Sprintf("the upstream answered %d itself", in.Status)
	case strings.HasPrefix(d, "upstream_") || hasFlag(in.Flags, "UH") || hasFlag(in.Flags, "UF") || hasFlag(in.Flags, "UT"):
		e.Check = "upstream"
		e.Meaning = "the upstream could not be reached or did not answer in time (" + d + ")"
	}
	return e
}

// Summarize sets r.Summary from its steps: the first step that refused.
func Summarize(r *Record) {
	status := ""
	if r.Status != 0 {
		status = fmt.Sprintf("%d: ", r.Status)
	}
	switch {
	case r.Identity != nil && r.Identity.Result == "failed":
		id := r.Identity
		s := fmt.Sprintf("%sidentity refused: the %s check failed", status, id.Check)
		if id.Credential == "none" {
			s = status + "identity refused: no credential (no bearer token or session cookie)"
		}
		if id.Issuer != "" {
			s += fmt.Sprintf(" (issuer %s)", id.Issuer)
		}
		if id.Detail != "" {
			s += ": " + id.Detail
		}
		r.Summary = s
	case r.Policy != nil && !r.Policy.Allowed:
		s := fmt.Sprintf("%spolicy %s (revision %s) denied", status, r.Policy.Decision, r.Policy.Revision)
		if r.Policy.DryRun {
			s += ", but dry-run mode allowed the request"
		}
		if r.Policy.Error != "" {
			s = fmt.Sprintf("%spolicy %s failed: %s", status, r.Policy.Decision, r.Policy.Error)
		}
		r.Summary = s
	case len(r.RateLimit) > 0:
		q := r.RateLimit[0]
		r.Summary = fmt.Sprintf("%squota %s exceeded: %d requests per %s allowed, %d already counted in this %s", status, q.Quota, q.Limit, q.Window, q.Count, q.Window)
	case r.Edge != nil && r.Edge.Meaning != "":
		r.Summary = status + r.Edge.Meaning
	case r.Reason != "":
		r.Summary = fmt.Sprintf("%sauthz answered %s (%s)", status, r.Outcome, r.Reason)
	default:
		r.Summary = status + "no step recorded a refusal"
	}
}
