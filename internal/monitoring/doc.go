// Package monitoring holds the tests of loraft's monitoring files in
// deploy/: the Prometheus scrape configuration and the Grafana dashboard
// query only series the coordinators and trainers export, and Debian's
// real Prometheus server scrapes a running cluster. It has no code of its
// own: the metrics live in coordinator (metrics.go) and trainer/agent.
package monitoring
