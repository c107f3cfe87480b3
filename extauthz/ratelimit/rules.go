// Package ratelimit is kailash's global rate-limit service: it implements
// envoy.service.ratelimit.v3.RateLimitService, so Envoy's ratelimit filter
// calls it (and envoyproxy/ratelimit could stand in for it).
//
// Rules come from the tenants' quotas (config.Tenant.Quotas), the descriptor
// contract shared with xds. Counters use a sliding window (the current and
// the previous fixed window, the previous one weighted by how much of it is
// still inside the window), in memory or in Redis (one atomic Lua script per
// decision). When the counters cannot be reached the configured fail mode
// applies at once: Redis calls have short deadlines and a circuit breaker,
// so a dead Redis never stalls requests.
package ratelimit

import (
	"strings"

	rlcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/wire"
)

// Rules are the quotas of one config version, immutable once built.
type Rules struct {
	// byTenant holds each tenant's quotas (descriptor patterns).
	byTenant map[string][]config.Quota
}

// NewRules indexes the tenants' quotas.
func NewRules(cfg *config.Config) *Rules {
	r := &Rules{byTenant: map[string][]config.Quota{}}
	for i := range cfg.Tenants {
		t := &cfg.Tenants[i]
		if !t.IsActive() {
			continue
		}
		if qs := t.Quotas(); len(qs) > 0 {
			r.byTenant[t.ID] = qs
		}
	}
	return r
}

// Len is the number of quotas.
func (r *Rules) Len() int {
	n := 0
	for _, qs := range r.byTenant {
		n += len(qs)
	}
	return n
}

// match finds the quota a descriptor falls under and the counter key (one
// per quota and distinct wildcard values). ok is false when no quota applies.
func (r *Rules) match(d *rlcommonv3.RateLimitDescriptor) (q *config.Quota, key string, ok bool) {
	es := d.GetEntries()
	if len(es) == 0 || es[0].GetKey() != wire.DescTenant {
		return nil, "", false
	}
	for i := range r.byTenant[es[0].GetValue()] {
		q := &r.byTenant[es[0].GetValue()][i]
		if len(q.Entries) != len(es) {
			continue
		}
		var b strings.Builder
		b.WriteString(q.Name)
		matched := true
		for j, pe := range q.Entries {
			e := es[j]
			if e.GetKey() != pe.Key || e.GetValue() == "" || (pe.Value != "" && pe.Value != e.GetValue()) {
				matched = false
				break
			}
			if pe.Value == "" {
				b.WriteByte('|')
				b.WriteString(e.GetValue())
			}
		}
		if matched {
			return q, b.String(), true
		}
	}
	return nil, "", false
}
