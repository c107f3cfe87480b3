package ratelimit

import (
	"context"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The draft RateLimit headers envoyproxy/ratelimit sets with
// LIMIT_RESPONSE_HEADERS_ENABLED=true (their default names).
const (
	HeaderRateLimitLimit     = "RateLimit-Limit"
	HeaderRateLimitRemaining = "RateLimit-Remaining"
	HeaderRateLimitReset     = "RateLimit-Reset"
)

// SetRLSConfig swaps in envoyproxy/ratelimit-format limits (nil removes
// them); requests in flight keep the ones they started with. Their domains
// are answered from them, in fixed windows; other domains as before.
func (s *Server) SetRLSConfig(c *RLSConfig) {
	s.rls.Store(c)
	if c != nil {
		s.m.rules.Set(float64(s.rules.Load().Len() + c.Len()))
	}
}

// rlsCounterKey is one counter per domain and descriptor values (the
// values the request carries, also for key-only and wildcard matches), as
// envoyproxy/ratelimit keys its cache.
func rlsCounterKey(domain string, d *rlcommonv3.RateLimitDescriptor) string {
	var b strings.Builder
	b.WriteString(url.QueryEscape(domain))
	for _, e := range d.GetEntries() {
		b.WriteByte('|')
		b.WriteString(url.QueryEscape(e.GetKey()))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(e.GetValue()))
	}
	return b.String()
}

// rlsReset is the time until the unit's window ends in whole seconds, as
// envoyproxy/ratelimit reports it (unit − now mod unit).
func rlsReset(u rlsv3.RateLimitResponse_RateLimit_Unit, now time.Time) time.Duration {
	sec := int64(rlsUnitWindow(u) / time.Second)
	if sec <= 0 {
		return 0
	}
	return time.Duration(sec-now.Unix()%sec) * time.Second
}

// shouldRLS answers a request of a domain of c with envoyproxy/ratelimit's
// semantics: the limit of each descriptor (see RLSConfig.Limit), unlimited
// descriptors OK with limit_remaining MaxUint32 and nothing counted, limits
// named in another matched limit's replaces skipped, fixed-window counting
// that always adds the hits, OVER_LIMIT once the count after them exceeds
// requests_per_unit, and shadow_mode answering OK while counting and
// recording the over-limit decision.
func (s *Server) shouldRLS(ctx context.Context, c *RLSConfig, req *rlsv3.RateLimitRequest, start time.Time) (*rlsv3.RateLimitResponse, error) {
	if len(req.GetDescriptors()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "rate limit descriptor list must not be empty")
	}
	fb, ok := s.backend.(FixedBackend)
	if !ok {
		return nil, status.Error(codes.Internal, "rate-limit backend has no fixed-window counters")
	}
	ds := req.GetDescriptors()
	limits := make([]*RLSLimit, len(ds))
	replaced := map[string]bool{}
	for i, d := range ds {
		if o := d.GetLimit(); o != nil { // the descriptor's own limit override
			limits[i] = &RLSLimit{RequestsPerUnit: o.GetRequestsPerUnit(), Unit: rlsv3.RateLimitResponse_RateLimit_Unit(o.GetUnit())}
		} else {
			limits[i] = c.Limit(req.GetDomain(), d)
		}
		if limits[i] != nil {
			for _, r := range limits[i].Replaces {
				replaced[r] = true
			}
		}
	}
	resp := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK, Statuses: make([]*rlsv3.RateLimitResponse_DescriptorStatus, len(ds))}
	var closest *rlsv3.RateLimitResponse_DescriptorStatus
	for i, d := range ds {
		l := limits[i]
		switch {
		case l == nil || (l.Name != "" && replaced[l.Name] && !l.Unlimited):
			resp.Statuses[i] = &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
			continue
		case l.Unlimited:
			resp.Statuses[i] = &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK, LimitRemaining: math.MaxUint32}
			s.m.decisions.WithLabelValues("ok").Inc()
			continue
		}
		hits := uint64(max(1, req.GetHitsAddend()))
		if d.GetHitsAddend() != nil {
			hits = d.GetHitsAddend().GetValue() // zero: check without counting
		}
		w := l.Window()
		if w <= 0 {
			return nil, status.Errorf(codes.InvalidArgument, "descriptor %d: unknown rate limit unit", i)
		}
		after, _, err := fb.Incr(ctx, rlsCounterKey(req.GetDomain(), d), w, hits, start)
		if err != nil {
			s.m.backendErrors.Inc()
			s.m.decisions.WithLabelValues("fail_" + s.failMode()).Inc()
			s.logBackendError(err)
			if s.failOpen {
				resp.Statuses[i] = &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
				continue
			}
			return nil, status.Error(codes.Unavailable, "rate-limit counters unavailable")
		}
		st := &rlsv3.RateLimitResponse_DescriptorStatus{
			Code:               rlsv3.RateLimitResponse_OK,
			CurrentLimit:       &rlsv3.RateLimitResponse_RateLimit{Name: l.Name, RequestsPerUnit: l.RequestsPerUnit, Unit: l.Unit},
			DurationUntilReset: durationpb.New(rlsReset(l.Unit, start)),
		}
		resp.Statuses[i] = st
		over := after > uint64(l.RequestsPerUnit)
		if !over {
			st.LimitRemaining = uint32(uint64(l.RequestsPerUnit) - after)
		}
		switch {
		case over && l.ShadowMode:
			s.m.decisions.WithLabelValues("shadow_over_limit").Inc()
		case over:
			st.Code = rlsv3.RateLimitResponse_OVER_LIMIT
			resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
			s.m.decisions.WithLabelValues("over_limit").Inc()
		default:
			s.m.decisions.WithLabelValues("ok").Inc()
		}
		// The headers describe the descriptor closest to its limit; an
		// over-limit one wins.
		if st.Code == rlsv3.RateLimitResponse_OVER_LIMIT || closest == nil ||
			(closest.Code != rlsv3.RateLimitResponse_OVER_LIMIT && st.LimitRemaining < closest.LimitRemaining) {
			closest = st
		}
	}
	if s.rlsHeaders && closest != nil {
		resp.ResponseHeadersToAdd = []*corev3.HeaderValue{
			{Key: HeaderRateLimitLimit, Value: strconv.FormatUint(uint64(closest.CurrentLimit.RequestsPerUnit), 10)},
			{Key: HeaderRateLimitRemaining, Value: strconv.FormatUint(uint64(closest.LimitRemaining), 10)},
			{Key: HeaderRateLimitReset, Value: strconv.FormatInt(int64(closest.DurationUntilReset.AsDuration()/time.Second), 10)},
		}
	}
	s.m.latency.Observe(s.now().Sub(start).Seconds())
	return resp, nil
}
