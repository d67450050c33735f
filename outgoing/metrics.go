package outgoing

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the outgoing side's Prometheus metrics.
type Metrics struct {
	queued      prometheus.Counter
	attempts    *prometheus.CounterVec
	sendSeconds *prometheus.HistogramVec
	checks      *prometheus.CounterVec
	unknown     prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		queued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailsync_outbox_accepted_total", Help: "Messages accepted into the outbox.",
		}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailsync_send_attempts_total", Help: "Sending attempts by outcome (sent, retry, failed, unknown).",
		}, []string{"outcome"}),
		sendSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mailsync_send_duration_seconds", Help: "Time to send one message, by account.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"account"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailsync_smtp_checks_total", Help: "SMTP checks by the step they ended at and outcome.",
		}, []string{"step", "ok"}),
		unknown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailsync_send_unknown_total", Help: "Messages whose reply to the final dot was lost (maybe delivered, resent at least once).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.queued, m.attempts, m.sendSeconds, m.checks, m.unknown)
	}
	return m
}

func (m *Metrics) observeCheck(r Report) {
	step, ok := "", "true"
	if len(r.Steps) > 0 {
		step = string(r.Steps[len(r.Steps)-1].Step)
	}
	if !r.OK {
		step, ok = string(r.Failed), "false"
	}
	m.checks.WithLabelValues(step, ok).Inc()
}

// RegisterQueueGauge exposes the outbox's per-status counts, read from the
// database at scrape time.
func (s *Service) RegisterQueueGauge(reg prometheus.Registerer) {
	reg.MustRegister(&queueCollector{s: s, desc: prometheus.NewDesc(
		"mailsync_outbox_messages", "Messages in the outbox by status.", []string{"status"}, nil)})
}

type queueCollector struct {
	s    *Service
	desc *prometheus.Desc
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts, err := c.s.QueueCounts(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for status, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), status)
	}
}
