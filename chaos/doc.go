// Package chaos is loraft's gray-failure suite: it runs real clusters
// (three `loraft coordinator` processes, two `loraft trainer` processes and
// a MinIO server on loopback) through one undisturbed sweep and then the
// same sweep under each fault — a coordinator paused with SIGSTOP, a zombie
// leader, a paused trainer, MinIO paused or down, added latency and
// connection resets from internal/faultproxy — and checks after each that
// every trial ended once with the undisturbed run's adapter and metrics, that
// no trial ran twice at once, that the clients' history is linearizable, and
// that no process is left behind.
//
// The suite is behind the build tag "chaos" (it takes many minutes); run it
// with `make chaos`, which writes bench/results/chaos.json.
package chaos
