package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/loraft/loraft/internal/atomicfile"
	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/shard/wordpiece"
	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/sugarme/gotch"
	"github.com/urfave/cli/v2"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure this machine (results as JSON)",
		Subcommands: []*cli.Command{benchShardCommand(), benchStepCommand(), benchTrainerCommand(), benchCheckpointCommand(), benchAllreduceCommand(), benchAllreduceRankCommand(), benchFailoverCommand(), {
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
				return writeJSON(c, c.String("out"), report)
			},
		}},
	}
}

// writeJSON writes v as indented JSON to path (atomically), or to stdout when path is empty.
func writeJSON(c *cli.Context, path string, v any) error {
	buf, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	buf = append(buf, '\n')
	if path == "" {
		_, err = c.App.Writer.Write(buf)
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("flag --out: %w", err)
	}
	if err := atomicfile.WriteFile(path, buf, 0o644); err != nil {
		return fmt.Errorf("flag --out: %w", err)
	}
	return nil
}

func benchShardCommand() *cli.Command {
	return &cli.Command{
		Name:  "shard",
		Usage: "time reading + splitting, tokenizing (cache off) and loading cached tokens of a dataset",
		Flags: []cli.Flag{
			&cli.PathFlag{Name: "data", Required: true, Usage: "dataset CSV"},
			&cli.IntFlag{Name: "max-len", Value: shard.DefaultMaxLen},
			&cli.IntFlag{Name: "repeat", Value: 3, Usage: "best of this many runs"},
			&cli.StringFlag{Name: "out", Usage: "write the JSON here (default: stdout)"},
		},
		Action: func(c *cli.Context) error {
			tok, err := wordpiece.BertBaseUncased()
			if err != nil {
				return err
			}
			best := func(f func() error) (float64, error) {
				b := math.Inf(1)
				for range max(1, c.Int("repeat")) {
					start := time.Now()
					if err := f(); err != nil {
						return 0, err
					}
					b = min(b, time.Since(start).Seconds())
				}
				return b, nil
			}
			var ds *shard.Dataset
			readSplit, err := best(func() error {
				var err error
				if ds, err = shard.ReadFile(c.Path("data"), shard.Options{}); err != nil {
					return err
				}
				_, err = shard.NewSplit(ds, 42, shard.DefaultRatios)
				return err
			})
			if err != nil {
				return err
			}
			var toks *shard.Tokens
			tokenize, err := best(func() error {
				var err error
				toks, err = shard.Tokenize(c.Context, ds, tok, c.Int("max-len"), nil)
				return err
			})
			if err != nil {
				return err
			}
			cacheDir, err := os.MkdirTemp("", "loraft-bench-tokens-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(cacheDir)
			if _, _, err := shard.LoadOrTokenize(c.Context, cacheDir, ds, tok, c.Int("max-len"), nil); err != nil {
				return err
			}
			cachedLoad, err := best(func() error {
				_, cached, err := shard.LoadOrTokenize(c.Context, cacheDir, ds, tok, c.Int("max-len"), nil)
				if err == nil && !cached {
					err = fmt.Errorf("token cache in %s was not used", cacheDir)
				}
				return err
			})
			if err != nil {
				return err
			}
			tokens := 0
			for _, l := range toks.FullLen {
				tokens += int(l)
			}
			report := map[string]any{
				"date":          time.Now().UTC().Format(time.RFC3339),
				"loraft":        version,
				"file":          filepath.Base(c.Path("data")),
				"rows":          len(ds.Rows),
				"threads":       runtime.GOMAXPROCS(0),
				"read_split_s":  readSplit,
				"tokenize_s":    tokenize,
				"rows_per_s":    float64(len(ds.Rows)) / tokenize,
				"tokens_per_s":  float64(tokens) / tokenize,
				"tokens":        tokens,
				"cached_load_s": cachedLoad,
				"cache_speedup": tokenize / cachedLoad,
				"note":          "best of --repeat runs; tokenize_s is with the cache off, on all threads; tokens count every WordPiece before truncation",
			}
			return writeJSON(c, c.String("out"), report)
		},
	}
}
