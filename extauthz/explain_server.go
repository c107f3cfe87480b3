package extauthz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
	"github.com/kailash-gw/kailash/extauthz/explain"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/telemetry"
	"github.com/kailash-gw/kailash/internal/wire"
	"github.com/kailash-gw/kailash/policies"
)

// ExplainLogName is the log_name of Envoy's gRPC access log to authz (the
// answers of 400 and above), which the control plane configures.
const ExplainLogName = "kailash_explain"

// RateLimitExplainer finds what the rate-limit service counted for a
// decision (in process under `kailash up`).
type RateLimitExplainer func(decisionID string) []explain.RateLimitStep

// recordExplain keeps what this Check learned about a refusal.
func (s *Server) recordExplain(ctx context.Context, req *authv3.CheckRequest, d *envoyauth.Decision, st *checkState,
	result, reason, requestID string, err error, start time.Time) {
	h := req.GetAttributes().GetRequest().GetHttp()
	s.explain.Update(d.ID, requestID, func(r *explain.Record) {
		r.Time, r.TraceID, r.Tenant = start.UTC(), telemetry.TraceID(ctx), d.Tenant
		r.Method, r.Host, r.Path = h.GetMethod(), h.GetHost(), pathOnly(h.GetPath())
		r.ClientIP = req.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress()
		r.Outcome, r.Reason = result, reason
		if st.credential != "" {
			id := &explain.IdentityStep{Result: "ok", Credential: st.credential}
			switch {
			case st.authErr != nil:
				id.Result, id.Check, id.Detail, id.Issuer = "failed", string(st.authErr.Reason), st.authErr.Detail, st.claimedIssuer
			case d.Identity != nil:
				id.Issuer, id.Subject = d.Identity.Issuer, d.Identity.Subject
			case reason == reasonKeysUnavailable:
				id.Result, id.Check, id.Detail = "failed", reasonKeysUnavailable, "the tenant's verification keys could not be fetched (503)"
			}
			r.Identity = id
		}
		if st.input != nil {
			p := &explain.PolicyStep{Decision: s.engine.Decision(), Revision: st.revision, DryRun: st.dryRun, Input: st.input}
			p.Allowed = result == ResultAllow
			if result == ResultError && err != nil {
				p.Error = err.Error()
			}
			r.Policy = p
		}
		explain.Summarize(r)
	})
	if s.explain.Shared() != nil {
		s.explain.ShareCheck(d.ID, sharedInput(st.input))
	}
}

// sharedInput is the policy input as JSON for the shared store, without
// the request's credentials (as the decision log leaves them out).
func sharedInput(v ast.Value) json.RawMessage {
	if v == nil {
		return nil
	}
	in, err := ast.JSON(v)
	if err != nil {
		return nil
	}
	policies.MaskCredentials(in)
	b, err := json.Marshal(in)
	if err != nil {
		return nil
	}
	return b
}

func pathOnly(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		return p[:i]
	}
	return p
}

// StreamAccessLogs implements envoy.service.accesslog.v3.AccessLogService:
// Envoy reports its answers of 400 and above (see ExplainLogName), which
// become the edge step of the request's record.
func (s *Server) StreamAccessLogs(stream alsv3.AccessLogService_StreamAccessLogsServer) error {
	ours := false
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&alsv3.StreamAccessLogsResponse{})
		}
		if err != nil {
			return err
		}
		if id := msg.GetIdentifier(); id != nil {
			ours = id.GetLogName() == ExplainLogName
		}
		if !ours {
			continue
		}
		for _, e := range msg.GetHttpLogs().GetLogEntry() {
			s.recordEdge(e)
		}
	}
}

func (s *Server) recordEdge(e *alsdatav3.HTTPAccessLogEntry) {
	c, req, resp := e.GetCommonProperties(), e.GetRequest(), e.GetResponse()
	var decisionID, tenant string
	if md := c.GetMetadata().GetFilterMetadata()[wire.MetadataNamespace]; md != nil {
		decisionID = md.GetFields()[wire.MetadataDecisionID].GetStringValue()
		tenant = md.GetFields()[wire.MetadataTenant].GetStringValue()
	}
	host := config.RequestHost(req.GetAuthority())
	inactive := false
	if snap := s.snap.Load(); snap != nil {
		if tenant == "" {
			tenant = snap.domains[host]
		}
		if t, ok := snap.tenants[tenant]; ok {
			inactive = !t.cfg.IsActive()
		}
	}
	in := explain.EdgeInput{Status: int(resp.GetResponseCode().GetValue()), Flags: shortFlags(c.GetResponseFlags()),
		Details: resp.GetResponseCodeDetails(), Host: host, ClientIP: socketIP(c.GetDownstreamRemoteAddress()), Tenant: tenant, Inactive: inactive}
	s.explain.Update(decisionID, req.GetRequestId(), func(r *explain.Record) {
		if r.Time.IsZero() {
			r.Time = c.GetStartTime().AsTime().UTC()
		}
		if r.Tenant == "" {
			r.Tenant = tenant
		}
		if r.Method == "" {
			r.Method, r.Host, r.Path, r.ClientIP = req.GetRequestMethod().String(), host, pathOnly(req.GetPath()), in.ClientIP
		}
		if r.Outcome == "" && decisionID != "" {
			r.Outcome = ResultAllow // ext_authz allowed it (it set the metadata); a later filter refused
		}
		r.Status = in.Status
		r.Edge = explain.Edge(in)
		explain.Summarize(r)
	})
	id := req.GetRequestId()
	if id == "" {
		id = decisionID
	}
	s.explain.ShareEdge(id)
}

func socketIP(a *corev3.Address) string { return a.GetSocketAddress().GetAddress() }

// shortFlags are Envoy's short response flag names (as %RESPONSE_FLAGS%).
func shortFlags(f *alsdatav3.ResponseFlags) string {
	var out []string
	for _, x := range []struct {
		on   bool
		name string
	}{
		{f.GetNoRouteFound(), "NR"}, {f.GetRateLimited(), "RL"}, {f.GetUnauthorizedDetails() != nil, "UAEX"},
		{f.GetRateLimitServiceError(), "RLSE"}, {f.GetNoHealthyUpstream(), "UH"}, {f.GetUpstreamConnectionFailure(), "UF"},
		{f.GetUpstreamRequestTimeout(), "UT"}, {f.GetUpstreamRemoteReset(), "UR"}, {f.GetLocalReset(), "LR"},
		{f.GetNoClusterFound(), "NC"}, {f.GetOverloadManager(), "OM"}, {f.GetStreamIdleTimeout(), "SI"},
		{f.GetDownstreamConnectionTermination(), "DC"}, {f.GetDurationTimeout(), "DT"},
	} {
		if x.on {
			out = append(out, x.name)
		}
	}
	return strings.Join(out, ",")
}

// Explain is the record of a decision id or request id, with the policy's
// rules evaluated now and what the rate-limit service counted.
func (s *Server) Explain(ctx context.Context, id string) (explain.Record, bool) {
	r, input, ok, err := s.explain.Lookup(ctx, id)
	if err != nil {
		s.log.Warn("explain: the shared records (sessions.redis) could not be read; this replica's only", "err", err)
	}
	if !ok {
		return r, false
	}
	if p := r.Policy; p != nil && p.Input == nil && input != nil {
		var v any
		if err := util.UnmarshalJSON(input, &v); err == nil {
			p.Input, _ = ast.InterfaceToValue(v)
		}
	}
	if p := r.Policy; p != nil && p.Input != nil && !p.Allowed && p.Error == "" {
		ex := s.engine.ExplainRules(ctx, p.Input)
		p.Rules, p.Undefined, p.ExplainedRevision = ex.Rules, ex.Undefined, ex.Revision
	}
	if r.DecisionID != "" && r.Outcome == ResultAllow {
		r.RateLimit = s.rateLimitSteps(ctx, r.DecisionID)
	}
	explain.Summarize(&r)
	return r, true
}

func (s *Server) rateLimitSteps(ctx context.Context, decisionID string) []explain.RateLimitStep {
	if s.rlExplain != nil {
		return s.rlExplain(decisionID)
	}
	if s.rlHTTP == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.rlHTTP+"/v1/admin/explain/"+decisionID, nil)
	if err != nil {
		return nil
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.log.Warn("explain: the rate-limit service did not answer", "addr", s.rlHTTP, "err", err)
		return nil
	}
	defer resp.Body.Close()
	var steps []explain.RateLimitStep
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&steps) != nil {
		return nil
	}
	return steps
}

// serveExplain is GET /v1/admin/explain/{id} on the HTTP (admin) port.
func (s *Server) serveExplain(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	id := r.PathValue("id")
	if !s.explain.Enabled() {
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "off", "message": "authz.explain.records is 0: nothing is kept"})
		return
	}
	rec, ok := s.Explain(r.Context(), id)
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "not_found", "message": fmt.Sprintf(
			"no record of decision or request id %q here: only refusals (and Envoy's answers of 400 and above) are kept, the last %d", id, s.explainCap)})
		return
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(rec)
}
