package api

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/workflow/store"
)

// purger runs the store's Purge every runner.retention.interval while the
// server serves (docs/deploy.md, "Retention"). Replicas on one PostgreSQL
// database may all run it: the store splits the rows between them.
type purger struct {
	store    store.Store
	ret      config.Retention
	interval time.Duration
	log      *slog.Logger
	now      func() time.Time

	purged      *prometheus.CounterVec // by table
	lastSuccess prometheus.Gauge
	failures    prometheus.Counter
}

// purgeTables are the purged_total label values.
var purgeTables = []string{"executions", "node_results", "audit_log"}

// newPurger is nil when nothing is to be purged; its metrics go to reg.
func newPurger(st store.Store, ret config.Retention, log *slog.Logger, reg prometheus.Registerer) *purger {
	if !ret.Enabled() {
		return nil
	}
	p := &purger{store: st, ret: ret, interval: ret.PurgeInterval(), log: log, now: time.Now,
		purged: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kailash_runner_purged_total", Help: "Rows deleted by the retention purge (runner.retention), by table.",
		}, []string{"table"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kailash_runner_purge_last_success_timestamp_seconds", Help: "When the retention purge last completed without error (Unix seconds).",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kailash_runner_purge_errors_total", Help: "Retention purges that failed (in at least one tenant); see the runner's log.",
		}),
	}
	for _, t := range purgeTables {
		p.purged.WithLabelValues(t)
	}
	reg.MustRegister(p.purged, p.lastSuccess, p.failures)
	return p
}

// run purges at once and then every interval until ctx ends.
func (p *purger) run(ctx context.Context) {
	p.log.Info("runner: retention purge scheduled", "executions", p.ret.Executions.String(), "audit", p.ret.Audit.String(), "interval", p.interval.String())
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	for {
		p.purgeOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// purgeOnce runs one purge and reports it: counts on success, the error
// (which names tenants and tables, never row contents) on failure.
func (p *purger) purgeOnce(ctx context.Context) {
	start := p.now()
	var execBefore, auditBefore time.Time
	if p.ret.Executions > 0 {
		execBefore = start.Add(-p.ret.Executions)
	}
	if p.ret.Audit > 0 {
		auditBefore = start.Add(-p.ret.Audit)
	}
	res, err := p.store.Purge(ctx, execBefore, auditBefore)
	p.purged.WithLabelValues("executions").Add(float64(res.Executions))
	p.purged.WithLabelValues("node_results").Add(float64(res.NodeResults))
	p.purged.WithLabelValues("audit_log").Add(float64(res.Audit))
	attrs := []any{"executions", res.Executions, "node_results", res.NodeResults, "audit_log", res.Audit,
		"took", time.Since(start).Round(time.Millisecond).String()}
	switch {
	case err != nil && ctx.Err() != nil:
		return // shutting down
	case err != nil:
		p.failures.Inc()
		p.log.Warn("runner: retention purge failed; retrying next interval", append(attrs, "err", err)...)
	default:
		p.lastSuccess.Set(float64(p.now().UnixNano()) / 1e9)
		p.log.Info("runner: retention purge", attrs...)
	}
}
