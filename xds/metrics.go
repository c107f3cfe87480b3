package xds

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the control plane's own; the registry is the Server's.
type metrics struct {
	version   prometheus.Gauge
	snapshots prometheus.Counter
	rejected  prometheus.Counter
	nacks     *prometheus.CounterVec
	acks      *prometheus.CounterVec
	streams   prometheus.Gauge
	nodes     prometheus.Gauge
	build     prometheus.Histogram
	builds    *prometheus.CounterVec
	certs     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		version: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kailash_xds_snapshot_version",
			Help: "Sequence number of the snapshot being served.",
		}),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kailash_xds_snapshots_total",
			Help: "Snapshots published.",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kailash_xds_config_rejected_total",
			Help: "Configs refused (translation or snapshot consistency); the last good snapshot kept serving.",
		}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kailash_xds_nacks_total",
			Help: "Discovery requests in which Envoy rejected the previous response, by node (at most 1000 node ids, then _other) and type.",
		}, []string{"node", "type_url"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kailash_xds_acks_total",
			Help: "Responses Envoy accepted (ACKed), by node (at most 1000 node ids, then _other) and type.",
		}, []string{"node", "type_url"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kailash_xds_streams",
			Help: "Open xDS streams.",
		}),
		nodes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kailash_xds_nodes",
			Help: "Envoy node ids known to the control plane (configured or seen).",
		}),
	}
	m.build = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "kailash_xds_snapshot_build_seconds",
		Help:    "Time to build a snapshot from a config: read the certificate files, translate, version and check it (accepted or not).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
	m.builds = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kailash_xds_snapshot_builds_total",
		Help: "Snapshots built from a config (accepted or not), by how: patch (only the tenants added, changed or removed translated into the served snapshot) or full (the whole config translated).",
	}, []string{"how"})
	m.certs = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kailash_xds_certificates_last_load_timestamp_seconds",
		Help: "When the tenants' certificate files were last read into a snapshot that was accepted (Unix time).",
	})
	reg.MustRegister(m.version, m.snapshots, m.rejected, m.nacks, m.acks, m.streams, m.nodes, m.build, m.builds, m.certs)
	return m
}

// cacheLogger routes go-control-plane's printf logging to slog. Its Info
// output is per-request chatter, so it goes to Debug.
func cacheLogger(l *slog.Logger) log.Logger {
	at := func(level slog.Level) func(string, ...any) {
		return func(format string, args ...any) {
			if l.Enabled(context.Background(), level) {
				l.Log(context.Background(), level, fmt.Sprintf(format, args...))
			}
		}
	}
	return log.LoggerFuncs{
		DebugFunc: at(slog.LevelDebug),
		InfoFunc:  at(slog.LevelDebug),
		WarnFunc:  at(slog.LevelWarn),
		ErrorFunc: at(slog.LevelError),
	}
}
