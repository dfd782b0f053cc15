package coordinator

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metricSet holds one coordinator's Prometheus series, in a registry of its
// own (not the global default) so that several coordinators in one test
// process do not collide.
type metricSet struct {
	reg *prometheus.Registry
}

func newMetrics() *metricSet {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &metricSet{reg: reg}
}

// Metrics is the coordinator's Prometheus registry, served on /metrics.
func (c *Coordinator) Metrics() prometheus.Gatherer { return c.metrics.reg }
