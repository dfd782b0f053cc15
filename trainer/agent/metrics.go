package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/loraft/loraft/coordinator/authz"
	"github.com/loraft/loraft/trainer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metric names of a trainer, loraft_<subsystem>_<name>_<unit>. No label
// names a trial or a peer: one trainer runs one job at a time, and the
// series follow whichever it runs.
const (
	MetricStepDuration       = "loraft_trainer_step_duration_seconds"      // histogram
	MetricSteps              = "loraft_trainer_steps_total"                // counter
	MetricSamplesPerSecond   = "loraft_trainer_samples_per_second"         // gauge: this rank's samples over its last step
	MetricLoss               = "loraft_trainer_loss"                       // gauge: the last step's training loss
	MetricAllReduceDuration  = "loraft_trainer_allreduce_duration_seconds" // histogram
	MetricJobsRunning        = "loraft_trainer_jobs_running"               // gauge: 0 or 1
	MetricCheckpointSave     = "loraft_checkpoint_save_duration_seconds"   // histogram
	MetricCheckpointLoad     = "loraft_checkpoint_load_duration_seconds"   // histogram
	MetricCheckpointFailures = "loraft_checkpoint_save_failures_total"     // counter: failed write attempts (each is retried)
)

// Metrics are a trainer's Prometheus series in a registry of its own, with
// the Go and process collectors (process_resident_memory_bytes is the RSS).
// Set JobRunner.Metrics to fill them; serve them with ServeMetrics. A nil
// *Metrics measures nothing.
type Metrics struct {
	reg          *prometheus.Registry
	step         prometheus.Histogram
	steps        prometheus.Counter
	samples      prometheus.Gauge
	loss         prometheus.Gauge
	allReduce    prometheus.Histogram
	running      prometheus.Gauge
	save, load   prometheus.Histogram
	saveFailures prometheus.Counter
}

// NewMetrics makes a trainer's metrics and registers them.
func NewMetrics() *Metrics {
	secs := prometheus.ExponentialBuckets(0.001, 2.5, 14) // 1 ms … ~150 s
	m := &Metrics{reg: prometheus.NewRegistry(),
		step: prometheus.NewHistogram(prometheus.HistogramOpts{Name: MetricStepDuration, Buckets: secs,
			Help: "Wall time of one optimizer step (forward, backward, all-reduce, update; steps with an evaluation are not timed)."}),
		steps: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricSteps, Help: "Optimizer steps this trainer finished."}),
		samples: prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricSamplesPerSecond,
			Help: "Training samples this rank processed per second over its last step."}),
		loss: prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricLoss, Help: "Mean training loss of the last step."}),
		allReduce: prometheus.NewHistogram(prometheus.HistogramOpts{Name: MetricAllReduceDuration, Buckets: secs,
			Help: "Wall time of one gradient all-reduce over the ring (data-parallel trials only)."}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricJobsRunning, Help: "Jobs this trainer is running (0 or 1)."}),
		save: prometheus.NewHistogram(prometheus.HistogramOpts{Name: MetricCheckpointSave, Buckets: secs,
			Help: "Time to commit one checkpoint to the store (objects and manifest)."}),
		load: prometheus.NewHistogram(prometheus.HistogramOpts{Name: MetricCheckpointLoad, Buckets: secs,
			Help: "Time to load and verify the checkpoint a job resumed from."}),
		saveFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricCheckpointFailures,
			Help: "Failed attempts to write a checkpoint (each is retried) and checkpoints given up."}),
	}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.step, m.steps, m.samples, m.loss, m.allReduce, m.running, m.save, m.load, m.saveFailures)
	return m
}

// Gatherer is the registry ServeMetrics serves.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// observe hooks m into job: step times from its Progress calls, checkpoint
// times and failures, and all-reduce times (by wrapping its Reducer).
// samplesPerStep is what this rank processes per optimizer step. It
// returns the function that ends the job's measurement.
func (m *Metrics) observe(job *trainer.Job, samplesPerStep int) (done func()) {
	if m == nil {
		return func() {}
	}
	m.running.Inc()
	var mu sync.Mutex // Progress calls do not overlap, but stay safe
	var last time.Time
	lastStep := 0
	progress := job.Progress
	job.Progress = func(p trainer.Progress) {
		now := time.Now()
		mu.Lock()
		prev, prevStep := last, lastStep
		last, lastStep = now, max(lastStep, p.Step)
		mu.Unlock()
		// A step is timed from the previous call: the previous step's, or
		// the final evaluation's. Not timed: the first step of a job
		// (building the model is no step) and a step whose call carries an
		// evaluation (its time is mostly the evaluation's).
		if p.Step > prevStep {
			m.steps.Inc()
			m.loss.Set(p.Loss)
			if !prev.IsZero() && p.Eval == nil && p.Step == prevStep+1 {
				d := now.Sub(prev).Seconds()
				m.step.Observe(d)
				if d > 0 {
					m.samples.Set(float64(samplesPerStep) / d)
				}
			}
		}
		if progress != nil {
			progress(p)
		}
	}
	failed := job.SaveFailed
	job.SaveFailed = func(step int, err error) {
		m.saveFailures.Inc()
		if failed != nil {
			failed(step, err)
		}
	}
	job.SaveTook = func(_ int, d time.Duration) { m.save.Observe(d.Seconds()) }
	job.LoadTook = func(_ int, d time.Duration) { m.load.Observe(d.Seconds()) }
	if job.Reducer != nil {
		job.Reducer = timedReducer{job.Reducer, m.allReduce}
	}
	return func() { m.running.Dec(); m.samples.Set(0) }
}

// timedReducer times every all-reduce of the Reducer it wraps.
type timedReducer struct {
	trainer.Reducer
	h prometheus.Histogram
}

func (r timedReducer) AllReduce(ctx context.Context, step uint64, buf []float32) error {
	start := time.Now()
	err := r.Reducer.AllReduce(ctx, step, buf)
	r.h.Observe(time.Since(start).Seconds())
	return err
}

// MetricsServer serves a trainer's /metrics over HTTP, or HTTPS when given
// a server TLS configuration: then it asks for a client certificate and
// admits the read roles only (authz.HTTPCaller), as a coordinator does.
type MetricsServer struct {
	srv  *http.Server
	lis  net.Listener
	done chan error
}

// ServeMetrics listens on addr ("127.0.0.1:0" picks a port) and serves g
// at /metrics until Close.
func ServeMetrics(addr string, g prometheus.Gatherer, serverTLS *tls.Config, log *slog.Logger) (*MetricsServer, error) {
	if log == nil {
		log = slog.Default()
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("trainer metrics listener on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", authz.RequireHTTP(log, promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}), authz.ReadRoles()...))
	s := &MetricsServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}, lis: lis, done: make(chan error, 1)}
	if serverTLS != nil {
		tc := serverTLS.Clone()
		tc.ClientAuth = tls.VerifyClientCertIfGiven
		s.srv.TLSConfig, s.lis = tc, tls.NewListener(lis, tc)
	}
	go func() {
		err := s.srv.Serve(s.lis)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.done <- err
	}()
	return s, nil
}

// Addr is the address the server listens on.
func (s *MetricsServer) Addr() string { return s.lis.Addr().String() }

// Close stops the server (in-flight scrapes get a second) and returns why
// it stopped serving, if not because of Close.
func (s *MetricsServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	return <-s.done
}
