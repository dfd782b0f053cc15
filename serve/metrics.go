package serve

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the service's Prometheus series, on a registry of their own
// (so tests with several services in one process do not collide). Labels
// are bounded: a code, a front (http or grpc), a rule.
type Metrics struct {
	// Registry is what /metrics serves.
	Registry *prometheus.Registry

	requests   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	texts      prometheus.Counter
	batchSize  prometheus.Histogram
	batchSecs  prometheus.Histogram
	queue      prometheus.Gauge
	overloaded prometheus.Counter
	reviewed   *prometheus.CounterVec
	answered   prometheus.Counter
	swaps      prometheus.Counter
}

// NewMetrics registers the service's series and the Go and process
// collectors on a new registry.
func NewMetrics() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{Registry: r,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "loraft_serve_requests_total",
			Help: "Classification requests by front (http, grpc) and answer code."}, []string{"front", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "loraft_serve_request_duration_seconds",
			Help: "Time from a request's arrival to its answer.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"front"}),
		texts: prometheus.NewCounter(prometheus.CounterOpts{Name: "loraft_serve_texts_total", Help: "Texts classified."}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "loraft_serve_batch_size",
			Help: "Texts per forward pass.", Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}}),
		batchSecs: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "loraft_serve_batch_duration_seconds",
			Help: "Time of one forward pass.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		queue: prometheus.NewGauge(prometheus.GaugeOpts{Name: "loraft_serve_queue_texts",
			Help: "Texts waiting for a batch."}),
		overloaded: prometheus.NewCounter(prometheus.CounterOpts{Name: "loraft_serve_overloaded_total",
			Help: "Requests refused because the queue was full."}),
		reviewed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "loraft_serve_review_total",
			Help: "Texts sent to human review, by the rule that fired (a text may fire several)."}, []string{"rule"}),
		answered: prometheus.NewCounter(prometheus.CounterOpts{Name: "loraft_serve_review_checked_total",
			Help: "Texts checked for review: the review rate is loraft_serve_review_total over this."}),
		swaps: prometheus.NewCounter(prometheus.CounterOpts{Name: "loraft_serve_model_swaps_total",
			Help: "Models loaded (the first one included)."}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.latency, m.texts, m.batchSize, m.batchSecs, m.queue,
		m.overloaded, m.reviewed, m.answered, m.swaps} {
		f(c)
	}
	return m
}

func (m *Metrics) observeBatch(n int, took time.Duration) {
	m.texts.Add(float64(n))
	m.batchSize.Observe(float64(n))
	m.batchSecs.Observe(took.Seconds())
}

func (m *Metrics) observeReview(reasons []ReviewReason) {
	m.answered.Inc()
	for _, r := range reasons {
		m.reviewed.WithLabelValues(r.Rule).Inc()
	}
}

// observeRequest counts one answered request.
func (m *Metrics) observeRequest(front, code string, took time.Duration) {
	m.requests.WithLabelValues(front, code).Inc()
	m.latency.WithLabelValues(front).Observe(took.Seconds())
}
