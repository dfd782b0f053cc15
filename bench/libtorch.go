package bench

import (
	"context"
	"runtime"
	"time"

	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/sugarme/gotch"
)

// LibtorchConfig tunes the libtorch benchmark.
type LibtorchConfig struct {
	// MinTime is how long each measurement runs at least.
	MinTime time.Duration
}

// Libtorch measures the matrix-multiply throughput of the linked libtorch:
// f32 on 1 thread (the baseline) and on all threads, bf16 on all threads.
func (r *Runner) Libtorch(ctx context.Context, cfg LibtorchConfig) (Report, error) {
	threads, err := libtorch.SetThreads()
	if err != nil {
		return nil, err
	}
	// 512×768 · 768×768: one bert-base projection of a batch of 4×128 tokens.
	const m, k, n = 512, 768, 768
	cases := []struct {
		dtype   gotch.DType
		threads int
	}{{gotch.Float, 1}, {gotch.Float, threads}, {gotch.BFloat16, threads}}
	var results []libtorch.MatmulResult
	for _, cs := range cases {
		res, err := libtorch.MeasureMatmul(ctx, m, k, n, cs.dtype, cs.threads, cfg.MinTime)
		if err != nil {
			return nil, err
		}
		r.logf("matmul %dx%dx%d %-8s threads=%d: %.1f GFLOP/s\n", m, k, n, res.DType, res.Threads, res.GFLOPS)
		results = append(results, res)
	}
	info := libtorch.Describe()
	return Report{
		"date":                  time.Now().UTC().Format(time.RFC3339),
		"loraft":                r.Version,
		"torch_version":         info.TorchVersion,
		"cpus":                  runtime.NumCPU(),
		"threads":               threads,
		"matmul":                results,
		"f32_thread_speedup":    results[1].GFLOPS / results[0].GFLOPS,
		"bf16_over_f32_speedup": results[2].GFLOPS / results[1].GFLOPS,
		"note":                  "threads sizes libtorch's intra-op pool; f32 matmul runs in the BLAS (OpenBLAS with Debian's libtorch), whose own pool follows OPENBLAS_NUM_THREADS, so the 1-thread f32 baseline is 1 thread only with OPENBLAS_NUM_THREADS=1",
	}, nil
}
