// Package proc runs child processes that tests, benchmarks and the chaos
// suite start, signal, pause (SIGSTOP), resume, kill and restart: a [Proc]
// with its output in a log file, and a [MinIO] server on a free loopback
// port (MinIO is AGPL: never linked, always a separate process).
//
// The shipped binary's benchmarks use it, so it never imports testing:
// every call returns an error, and tests wrap it.
//
// Every child gets SIGKILL when the process that started it dies, however
// that ends, so none outlives its test or benchmark.
package proc
