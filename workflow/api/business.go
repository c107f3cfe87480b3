package api

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kailash-gw/kailash/workflow"
)

// businessMetrics are the seed's business metrics: workflows completed by
// tenant and department, and executions measured against the SLA their
// workflow declares (Definition.SLA).
type businessMetrics struct {
	completed *prometheus.CounterVec   // tenant, department
	compliant *prometheus.HistogramVec // tenant: min(1, sla / execution time)
	breaches  *prometheus.CounterVec   // tenant, workflow
	depts     labelCap
	workflows labelCap
}

func newBusinessMetrics(reg prometheus.Registerer) *businessMetrics {
	b := &businessMetrics{
		completed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kailash_runner_workflows_completed_total",
			Help: "Executions completed successfully, by tenant and the caller's department (the identity token's department attribute; \"none\" without one).",
		}, []string{"tenant", "department"}),
		compliant: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kailash_runner_sla_compliance_ratio",
			Help:    "min(1, SLA / execution time) of executions whose workflow declares an sla: 1 is within it, 0.5 took twice as long.",
			Buckets: []float64{0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1},
		}, []string{"tenant"}),
		breaches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kailash_runner_sla_breaches_total",
			Help: "Executions that took longer than their workflow's sla, by tenant and workflow.",
		}, []string{"tenant", "workflow"}),
		depts:     labelCap{max: 1000},
		workflows: labelCap{max: 1000},
	}
	reg.MustRegister(b.completed, b.compliant, b.breaches)
	return b
}

func (b *businessMetrics) observe(tenant, dept string, wf *workflow.Workflow, took time.Duration, ok bool) {
	if ok {
		if dept == "" {
			dept = "none"
		}
		b.completed.WithLabelValues(tenant, b.depts.label(tenant+"\x00"+dept, dept)).Inc()
	}
	sla := wf.SLA()
	if sla <= 0 {
		return
	}
	ratio := 1.0
	if took > sla {
		ratio = float64(sla) / float64(took)
		b.breaches.WithLabelValues(tenant, b.workflows.label(tenant+"\x00"+wf.Def.Name, wf.Def.Name)).Inc()
	}
	b.compliant.WithLabelValues(tenant).Observe(ratio)
}

// labelCap bounds a label's values: past max distinct keys, new ones are
// "_other" (a department comes from a token's attribute; series must not
// grow without bound).
type labelCap struct {
	mu   sync.Mutex
	max  int
	seen map[string]bool
}

func (c *labelCap) label(key, value string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[string]bool{}
	}
	if c.seen[key] {
		return value
	}
	if len(c.seen) >= c.max {
		return "_other"
	}
	c.seen[key] = true
	return value
}
