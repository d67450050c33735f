package imapsync

import "github.com/prometheus/client_golang/prometheus"

// metrics are the engine's Prometheus metrics.
type metrics struct {
	messages      prometheus.Counter
	bytes         prometheus.Counter
	rowWrites     *prometheus.CounterVec
	errors        *prometheus.CounterVec
	quarantined   prometheus.Counter
	idle          prometheus.Gauge
	held          prometheus.Gauge
	lag           prometheus.Histogram
	folderSeconds prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailsync_sync_messages_total", Help: "Messages stored by the IMAP sync.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailsync_sync_bytes_total", Help: "Raw message bytes fetched by the IMAP sync.",
		}),
		rowWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailsync_sync_row_writes_total", Help: "Message rows written by the IMAP sync, by operation (insert, update, delete).",
		}, []string{"op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailsync_sync_errors_total", Help: "IMAP sync errors by step (connect, login, select, search, flags, fetch, parse, store, idle, lease).",
		}, []string{"step"}),
		quarantined: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailsync_sync_quarantined_total", Help: "Messages quarantined after failing to parse too often.",
		}),
		idle: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailsync_sync_idle_connections", Help: "IMAP connections waiting in IDLE.",
		}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailsync_sync_mailboxes_held", Help: "Mailboxes whose sync lease this instance holds.",
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mailsync_sync_lag_seconds", Help: "Time from a new message's arrival on the server (INTERNALDATE) to its row in the database, after the first sync of its folder.",
			Buckets: []float64{.1, .25, .5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600},
		}),
		folderSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mailsync_sync_folder_duration_seconds", Help: "Time of one folder sync.",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 10),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.messages, m.bytes, m.rowWrites, m.errors, m.quarantined, m.idle, m.held, m.lag, m.folderSeconds)
	}
	return m
}
