package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/sugarme/gotch"
	"github.com/urfave/cli/v2"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure this machine (results as JSON)",
		Subcommands: []*cli.Command{{
			Name:  "libtorch",
			Usage: "matrix-multiply throughput of the linked libtorch: f32 on 1 thread (baseline) and all threads, bf16 on all threads",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "out", Usage: "write the JSON here (default: stdout)"},
				&cli.DurationFlag{Name: "min-time", Value: 2 * time.Second, Usage: "time each measurement at least this long"},
			},
			Action: func(c *cli.Context) error {
				threads, err := libtorch.SetThreads()
				if err != nil {
					return err
				}
				// 512×768 · 768×768: one bert-base projection of a batch of 4×128 tokens.
				const m, k, n = 512, 768, 768
				cases := []struct {
					dtype   gotch.DType
					threads int
				}{{gotch.Float, 1}, {gotch.Float, threads}, {gotch.BFloat16, threads}}
				var results []libtorch.MatmulResult
				for _, cs := range cases {
					r, err := libtorch.MeasureMatmul(c.Context, m, k, n, cs.dtype, cs.threads, c.Duration("min-time"))
					if err != nil {
						return err
					}
					fmt.Fprintf(os.Stderr, "matmul %dx%dx%d %-8s threads=%d: %.1f GFLOP/s\n", m, k, n, r.DType, r.Threads, r.GFLOPS)
					results = append(results, r)
				}
				info := libtorch.Describe()
				report := map[string]any{
					"date":                  time.Now().UTC().Format(time.RFC3339),
					"loraft":                version,
					"torch_version":         info.TorchVersion,
					"cpus":                  runtime.NumCPU(),
					"threads":               threads,
					"matmul":                results,
					"f32_thread_speedup":    results[1].GFLOPS / results[0].GFLOPS,
					"bf16_over_f32_speedup": results[2].GFLOPS / results[1].GFLOPS,
					"note":                  "threads sizes libtorch's intra-op pool; f32 matmul runs in the BLAS (OpenBLAS with Debian's libtorch), whose own pool follows OPENBLAS_NUM_THREADS, so the 1-thread f32 baseline is 1 thread only with OPENBLAS_NUM_THREADS=1",
				}
				buf, err := json.MarshalIndent(report, "", "  ")
				if err != nil {
					return err
				}
				buf = append(buf, '\n')
				out := c.String("out")
				if out == "" {
					_, err = c.App.Writer.Write(buf)
					return err
				}
				if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
					return fmt.Errorf("flag --out: %w", err)
				}
				tmp := out + ".tmp"
				if err := os.WriteFile(tmp, buf, 0o644); err != nil {
					return fmt.Errorf("flag --out: %w", err)
				}
				return os.Rename(tmp, out)
			},
		}},
	}
}
