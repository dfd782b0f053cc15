// Package bench measures what loraft needs from a machine and from itself:
// libtorch matmul throughput, reading and tokenizing a dataset, the QLoRA
// training step against PyTorch eager, checkpoint save and load, ring
// all-reduce between processes, coordinator failover, and `loraft serve`
// under Debian's hey load generator. Each benchmark
// is a method of [Runner] that returns a [Report]; `loraft bench <name>`
// parses the flags, calls it and writes the report to
// bench/results/<name>.json (see the Makefile's bench-* targets).
//
// The benchmarks whose parts are processes re-execute the loraft binary
// ([Runner.Bin]): `loraft bench step` (which calls [Step]) for the training
// step, `loraft bench allreduce-rank` ([AllreduceRank]) for each rank,
// `loraft coordinator` (through internal/proccluster) for failover, and
// `loraft serve` ([Runner.Serve]) for the serving benchmark. They run
// inside the shipped binary, so nothing here imports testing.
package bench

import (
	"fmt"
	"io"

	"github.com/loraft/loraft/internal/proc"
)

// Report is a benchmark's result, as written to bench/results/*.json.
type Report map[string]any

// Runner runs benchmarks on behalf of one loraft binary.
type Runner struct {
	// Version is the loraft version every report records.
	Version string
	// Bin is the loraft binary, for the benchmarks that run parts of
	// themselves as processes.
	Bin proc.Binary
	// Log receives progress lines (nil: none).
	Log io.Writer
}

func (r *Runner) logf(format string, args ...any) {
	if r.Log != nil {
		fmt.Fprintf(r.Log, format, args...)
	}
}
