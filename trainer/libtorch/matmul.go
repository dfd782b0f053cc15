package libtorch

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/sugarme/gotch"
	lib "github.com/sugarme/gotch/libtch"
	"github.com/sugarme/gotch/ts"
)

// MatmulResult is one matrix-multiply throughput measurement.
type MatmulResult struct {
	M     int64  `json:"m"`
	K     int64  `json:"k"`
	N     int64  `json:"n"`
	DType string `json:"dtype"`
	// Threads is libtorch's intra-op pool; OpenBLAS sizes its own pool
	// (OPENBLAS_NUM_THREADS) when it is the BLAS behind f32 matmul.
	Threads int     `json:"threads"`
	Iters   int     `json:"iters"`
	GFLOPS  float64 `json:"gflops"`
}

// MeasureMatmul times (M×K)·(K×N) products in dtype on the CPU with the
// given libtorch thread count for at least minDur, after one warm-up product,
// and restores the previous thread count. It is the yardstick for the BLAS
// libtorch uses: Debian's reference BLAS is ~30x slower than OpenBLAS.
func MeasureMatmul(ctx context.Context, m, k, n int64, dtype gotch.DType, threads int, minDur time.Duration) (MatmulResult, error) {
	runtime.LockOSThread() // gotch's error state is per OS thread
	defer runtime.UnlockOSThread()
	prev := lib.AtGetNumThreads()
	lib.AtSetNumThreads(threads)
	defer lib.AtSetNumThreads(prev)

	res := MatmulResult{M: m, K: k, N: n, DType: dtype.String(), Threads: lib.AtGetNumThreads()}
	a, err := ts.Randn([]int64{m, k}, dtype, gotch.CPU)
	if err != nil {
		return res, fmt.Errorf("matmul benchmark input: %w", err)
	}
	defer a.MustDrop()
	b, err := ts.Randn([]int64{k, n}, dtype, gotch.CPU)
	if err != nil {
		return res, fmt.Errorf("matmul benchmark input: %w", err)
	}
	defer b.MustDrop()

	product := func() error {
		c, err := a.Matmul(b, false)
		if err != nil {
			return fmt.Errorf("matmul %s: %w", dtype, err)
		}
		return c.Drop()
	}
	if err := product(); err != nil {
		return res, err
	}
	start := time.Now()
	for res.Iters == 0 || time.Since(start) < minDur {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := product(); err != nil {
			return res, err
		}
		res.Iters++
	}
	elapsed := time.Since(start).Seconds()
	res.GFLOPS = 2 * float64(m*k*n) * float64(res.Iters) / elapsed / 1e9
	return res, nil
}
