package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/loraft/loraft/bench"
	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/internal/atomicfile"
	"github.com/loraft/loraft/internal/proc"
	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer/allreduce"
	"github.com/urfave/cli/v2"
)

// The `loraft bench` commands parse flags, call package bench and write its
// report; the benchmarks themselves live there.

func benchCommand() *cli.Command {
	out := &cli.StringFlag{Name: "out", Usage: "write the JSON here (default: stdout)"}
	return &cli.Command{
		Name:  "bench",
		Usage: "measure this machine (results as JSON)",
		Subcommands: []*cli.Command{{
			Name:  "libtorch",
			Usage: "matrix-multiply throughput of the linked libtorch: f32 on 1 thread (baseline) and all threads, bf16 on all threads",
			Flags: []cli.Flag{out, &cli.DurationFlag{Name: "min-time", Value: 2 * time.Second, Usage: "time each measurement at least this long"}},
			Action: func(c *cli.Context) error {
				return benchReport(c)(benchRunner(c).Libtorch(c.Context, bench.LibtorchConfig{MinTime: c.Duration("min-time")}))
			},
		}, {
			Name:  "shard",
			Usage: "time reading + splitting, tokenizing (cache off) and loading cached tokens of a dataset",
			Flags: []cli.Flag{
				&cli.PathFlag{Name: "data", Required: true, Usage: "dataset CSV"},
				&cli.IntFlag{Name: "max-len", Value: shard.DefaultMaxLen},
				&cli.IntFlag{Name: "repeat", Value: 3, Usage: "best of this many runs"},
				out,
			},
			Action: func(c *cli.Context) error {
				return benchReport(c)(benchRunner(c).Shard(c.Context, bench.ShardConfig{Data: c.Path("data"), MaxLen: c.Int("max-len"), Repeat: c.Int("repeat")}))
			},
		}, {
			Name:  "step",
			Usage: "time training steps of one model on synthetic batches in this process (JSON); bench trainer runs it",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "config", Value: "base"},
				&cli.StringFlag{Name: "base", Value: "nf4", Usage: "nf4 or fp32"},
				&cli.StringFlag{Name: "compute-dtype", Value: "fp32"},
				&cli.StringFlag{Name: "device", Value: "cpu"},
				&cli.IntFlag{Name: "seq", Value: 128},
				&cli.IntFlag{Name: "batch", Value: 8},
				&cli.IntFlag{Name: "steps", Value: 3},
				&cli.IntFlag{Name: "warmup", Value: 1},
				&cli.IntSliceFlag{Name: "rss-at", Usage: "record RSS after these step numbers (soak)"},
				&cli.BoolFlag{Name: "grad-checkpoint", Usage: "recompute each layer in backward (as loraft train --grad-checkpoint)"},
			},
			Action: func(c *cli.Context) error {
				res, err := bench.Step(c.Context, bench.StepConfig{Config: c.String("config"), Base: c.String("base"),
					Compute: c.String("compute-dtype"), Device: c.String("device"), Seq: c.Int("seq"), Batch: c.Int("batch"),
					Steps: c.Int("steps"), Warmup: c.Int("warmup"), RSSAt: c.IntSlice("rss-at"), Recompute: c.Bool("grad-checkpoint")})
				if err != nil {
					return err
				}
				return json.NewEncoder(c.App.Writer).Encode(res)
			},
		}, {
			Name:  "dequant",
			Usage: "what an NF4 base adds per forward pass over an fp32 one: rebuilding every frozen Linear weight by the fused CPU loop and by tensor ops, against the fp32 base's cast, in fp32 and bf16 (JSON)",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "config", Value: "base"},
				&cli.StringFlag{Name: "device", Value: "cpu", Usage: "cpu, cuda or cuda:N (off CPU both ways are the tensor ops)"},
				&cli.IntFlag{Name: "rounds", Value: 7, Usage: "time each way this many times; the fastest counts"},
				out,
			},
			Action: func(c *cli.Context) error {
				return benchReport(c)(benchRunner(c).Dequant(c.Context, bench.DequantConfig{Config: c.String("config"),
					Device: c.String("device"), Rounds: c.Int("rounds")}))
			},
		}, {
			Name:  "trainer",
			Usage: "QLoRA step speed, memory and roofline fraction (NF4, NF4 with --grad-checkpoint, fp32 base) vs PyTorch eager on the same libtorch, per compute dtype, and an RSS soak (JSON)",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "config", Value: "base"},
				&cli.StringFlag{Name: "device", Value: "cpu"},
				&cli.StringFlag{Name: "compute-dtype", Value: "fp32,auto", Usage: "comma-separated: fp32, bf16, auto (bf16 only where a probe matmul shows it pays)"},
				&cli.IntFlag{Name: "seq", Value: 128},
				&cli.IntFlag{Name: "batch", Value: 8},
				&cli.IntFlag{Name: "steps", Value: 3},
				&cli.IntFlag{Name: "rounds", Value: 2, Usage: "run every variant this many times, in turn, and pool their steps (a shared machine's slow minute lands on all of them)"},
				&cli.IntFlag{Name: "soak-steps", Value: 2200, Usage: "tiny-config steps of the RSS soak (0: skip)"},
				&cli.StringFlag{Name: "python", Value: "/usr/bin/python3", Usage: "python with torch for the reference"},
				&cli.PathFlag{Name: "reference", Value: "bench/reference/qlora_step.py"},
				out,
			},
			Action: func(c *cli.Context) error {
				return benchReport(c)(benchRunner(c).Trainer(c.Context, bench.TrainerConfig{Config: c.String("config"),
					Device: c.String("device"), Computes: splitList(c.String("compute-dtype")), Seq: c.Int("seq"), Batch: c.Int("batch"),
					Steps: c.Int("steps"), Rounds: c.Int("rounds"), SoakSteps: c.Int("soak-steps"), Python: c.String("python"), Reference: c.Path("reference"),
					Progress: partialReport(c)}))
			},
		}, {
			Name:  "epoch",
			Usage: "train epochs of a dataset in this process with batches padded as shuffled and length-bucketed: samples/s, padding, macro-F1 (JSON)",
			Flags: []cli.Flag{
				&cli.PathFlag{Name: "data", Value: "experiments/data/demo.csv", Usage: "dataset CSV (e.g. ../shared/data/combined-val.csv)"},
				&cli.StringFlag{Name: "config", Value: "tiny"},
				&cli.IntFlag{Name: "max-len", Value: 128},
				&cli.IntFlag{Name: "batch", Value: 16},
				&cli.IntFlag{Name: "epochs", Value: 1},
				&cli.IntFlag{Name: "reps", Value: 2, Usage: "runs of each setting, interleaved; the faster is kept"},
				&cli.StringFlag{Name: "device", Value: "cpu"},
				&cli.StringFlag{Name: "compute-dtype", Value: "fp32", Usage: "fp32 or bf16"},
				&cli.BoolFlag{Name: "grad-checkpoint", Usage: "recompute each layer in backward"},
				out,
			},
			Action: func(c *cli.Context) error {
				return benchReport(c)(benchRunner(c).Epoch(c.Context, bench.EpochConfig{Data: c.Path("data"), Config: c.String("config"),
					MaxLen: c.Int("max-len"), Batch: c.Int("batch"), Epochs: c.Int("epochs"), Reps: c.Int("reps"),
					Device: c.String("device"), Compute: c.String("compute-dtype"), Recompute: c.Bool("grad-checkpoint")}))
			},
		}, {
			Name:  "parity",
			Usage: "train the same model with fp32 and bf16 compute over several seeds: is bf16's validation macro-F1 within seed noise? (JSON)",
			Flags: []cli.Flag{
				&cli.PathFlag{Name: "data", Value: "experiments/data/demo.csv", Usage: "dataset CSV (e.g. ../shared/data/combined-val.csv)"},
				&cli.IntFlag{Name: "rows", Usage: "use only the first N rows (0: all)"},
				&cli.StringFlag{Name: "config", Value: "tiny"},
				&cli.IntFlag{Name: "max-len", Value: 64},
				&cli.IntFlag{Name: "batch", Value: 16},
				&cli.IntFlag{Name: "epochs", Value: 2},
				&cli.Float64Flag{Name: "lr", Value: 1e-3},
				&cli.IntFlag{Name: "seeds", Value: 3},
				out,
			},
			Action: func(c *cli.Context) error {
				return benchReport(c)(benchRunner(c).Parity(c.Context, bench.ParityConfig{Data: c.Path("data"), Rows: c.Int("rows"),
					Config: c.String("config"), MaxLen: c.Int("max-len"), Batch: c.Int("batch"), Epochs: c.Int("epochs"),
					LR: c.Float64("lr"), Seeds: c.Int("seeds")}))
			},
		}, {
			Name:  "checkpoint",
			Usage: "save and load a bert-base r=8 checkpoint (adapter + AdamW state) to a local store and to MinIO on loopback (JSON)",
			Flags: []cli.Flag{&cli.IntFlag{Name: "repeat", Value: 5, Usage: "median of this many saves and loads"}, out},
			Action: func(c *cli.Context) error {
				return benchReport(c)(benchRunner(c).Checkpoint(c.Context, bench.CheckpointConfig{Repeat: c.Int("repeat")}))
			},
		}, {
			Name:  "allreduce",
			Usage: "ring all-reduce vs naive gather/broadcast with ranks as separate processes on loopback, against raw TCP (JSON)",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "ranks", Value: "2,4"},
				&cli.IntFlag{Name: "chunk-bytes", Usage: "allreduce.Config.ChunkBytes of every rank (0: the default)"},
				&cli.PathFlag{Name: "trainer-json", Value: "bench/results/trainer.json", Usage: "bert-base step time for the all-reduce share"},
				out,
			},
			Action: func(c *cli.Context) error {
				var ranks []int
				for _, s := range splitList(c.String("ranks")) {
					n, err := strconv.Atoi(s)
					if err != nil || n < 2 {
						return fmt.Errorf("flag --ranks: %q", s)
					}
					ranks = append(ranks, n)
				}
				return benchReport(c)(benchRunner(c).Allreduce(c.Context, bench.AllreduceConfig{Ranks: ranks,
					ChunkBytes: c.Int("chunk-bytes"), TrainerJSON: c.Path("trainer-json"), Progress: partialReport(c)}))
			},
		}, {
			Name:   "allreduce-rank",
			Usage:  "one rank process of bench allreduce",
			Hidden: true,
			Flags: []cli.Flag{
				&cli.IntFlag{Name: "rank"}, &cli.IntFlag{Name: "world"}, &cli.StringFlag{Name: "peers"}, &cli.IntFlag{Name: "chunk-bytes"},
			},
			Action: func(c *cli.Context) error {
				return bench.AllreduceRank(c.Context, allreduce.Config{Rank: c.Int("rank"), World: c.Int("world"),
					Peers: splitList(c.String("peers")), RunID: "bench", Generation: 1, StepTimeout: 2 * time.Minute,
					ChunkBytes: c.Int("chunk-bytes")}, c.App.Writer, os.Stdin)
			},
		}, {
			Name: "failover",
			Usage: "SIGKILL the leader of 3 coordinator processes on loopback: time until a new leader answers a consistent read " +
				"and until its scheduler places a trial again, per raft profile; and leader heartbeat throughput (JSON)",
			Flags: []cli.Flag{
				out,
				&cli.IntFlag{Name: "kills", Value: 10, Usage: "leader kills per raft profile"},
				&cli.StringFlag{Name: "profiles", Value: "default,fast", Usage: "raft profiles to measure"},
				&cli.DurationFlag{Name: "lease", Value: 2 * time.Second, Usage: "the coordinators' trainer --lease"},
				&cli.IntFlag{Name: "trainers", Value: 200, Usage: "simulated trainers registered for the heartbeat measurement"},
				&cli.IntFlag{Name: "heartbeat-goroutines", Value: 64, Usage: "concurrent heartbeat senders"},
				&cli.DurationFlag{Name: "heartbeat-time", Value: 5 * time.Second, Usage: "how long heartbeats are measured"},
			},
			Action: func(c *cli.Context) error {
				if c.Int("kills") < 1 {
					return fmt.Errorf("flag --kills: %d, want at least 1", c.Int("kills"))
				}
				var profiles []bench.RaftProfile
				for _, name := range splitList(c.String("profiles")) {
					t, err := coordinator.Profile(name)
					if err != nil {
						return fmt.Errorf("flag --profiles: %w", err)
					}
					profiles = append(profiles, bench.RaftProfile{Name: name, Heartbeat: t.HeartbeatTimeout,
						Election: t.ElectionTimeout, LeaderLease: t.LeaderLeaseTimeout})
				}
				if len(profiles) == 0 {
					return fmt.Errorf("flag --profiles: none")
				}
				res, err := benchRunner(c).Failover(c.Context, bench.FailoverConfig{Profiles: profiles, Kills: c.Int("kills"),
					Lease: c.Duration("lease"), Trainers: c.Int("trainers"), HeartbeatGoroutines: c.Int("heartbeat-goroutines"),
					HeartbeatTime: c.Duration("heartbeat-time")})
				if err != nil {
					return err
				}
				summary := c.App.ErrWriter // stdout is the JSON's without --out
				if c.String("out") != "" {
					summary = c.App.Writer
				}
				fmt.Fprint(summary, res.Summary)
				return writeJSON(c, c.String("out"), res.Report)
			},
		}, {
			Name: "scale",
			Usage: "1,000 simulated trainers heartbeating against 3 coordinator processes while a 10,000-trial sweep is launched, " +
				"listed page by page and deleted: leader CPU and RSS, heartbeat latency, raft log growth, snapshot and state size (JSON)",
			Flags: []cli.Flag{out, &cli.IntFlag{Name: "trainers", Value: 1000}, &cli.IntFlag{Name: "trials", Value: 10000},
				&cli.IntFlag{Name: "conns", Value: 16, Usage: "gRPC connections the simulated trainers share"},
				&cli.IntFlag{Name: "page-size", Value: 100}, &cli.DurationFlag{Name: "lease", Value: 3 * time.Second, Usage: "the coordinators' --lease"},
				&cli.DurationFlag{Name: "hold", Value: 10 * time.Second, Usage: "heartbeats measured idle, and again with trials running"}},
			Action: func(c *cli.Context) error {
				return benchReport(c)(benchRunner(c).Scale(c.Context, bench.ScaleConfig{Trainers: c.Int("trainers"), Trials: c.Int("trials"),
					Conns: c.Int("conns"), PageSize: int32(min(c.Int("page-size"), coordinator.MaxPageSize)), Lease: c.Duration("lease"), Hold: c.Duration("hold")}))
			},
		}, {
			Name: "serve",
			Usage: "requests/s and p50/p99 latency of `loraft serve` processes on loopback under Debian's hey, single-text requests, " +
				"dynamic batching on and off, tiny and bert-base random adapters (JSON)",
			Flags: []cli.Flag{out,
				&cli.StringFlag{Name: "hey", Value: "hey", Usage: "the load generator"},
				&cli.StringFlag{Name: "models", Value: "tiny,base", Usage: "model configurations served"},
				&cli.StringFlag{Name: "concurrency", Value: "1,8,64", Usage: "hey -c values"},
				&cli.DurationFlag{Name: "duration", Value: 10 * time.Second, Usage: "hey -z of each tiny-model measurement"},
				&cli.DurationFlag{Name: "base-duration", Value: 40 * time.Second, Usage: "hey -z of each bert-base measurement (long: at concurrency 64 one answer takes seconds)"},
				&cli.IntFlag{Name: "max-batch", Value: 32, Usage: "serve --max-batch with batching on"},
				&cli.DurationFlag{Name: "max-wait", Value: 5 * time.Millisecond, Usage: "serve --max-wait with batching on"},
				&cli.IntFlag{Name: "workers", Usage: "serve --workers (0: its default)"},
			},
			Action: func(c *cli.Context) error {
				var conc []int
				for _, s := range splitList(c.String("concurrency")) {
					n, err := strconv.Atoi(s)
					if err != nil || n < 1 {
						return fmt.Errorf("flag --concurrency: %q", s)
					}
					conc = append(conc, n)
				}
				return benchReport(c)(benchRunner(c).Serve(c.Context, bench.ServeConfig{Hey: c.String("hey"),
					Models: splitList(c.String("models")), Concurrency: conc, Duration: c.Duration("duration"),
					BaseDuration: c.Duration("base-duration"), MaxBatch: c.Int("max-batch"), MaxWait: c.Duration("max-wait"),
					Workers: c.Int("workers")}))
			},
		}, {
			Name:  "dashboard",
			Usage: "time a sweep page's first paint (HTML, its JSON, scripts and styles) and first live update, and /metrics with many trials, against an in-process coordinator (JSON)",
			Flags: []cli.Flag{out, &cli.IntFlag{Name: "trials", Value: 100}, &cli.IntFlag{Name: "loads", Value: 20},
				&cli.IntFlag{Name: "updates", Value: 20, Usage: "live updates timed"},
				&cli.IntFlag{Name: "metrics-trials", Value: 10000, Usage: "trials in the FSM when /metrics is timed"},
				&cli.IntFlag{Name: "scrapes", Value: 20, Usage: "/metrics scrapes timed"}},
			Action: func(c *cli.Context) error {
				return benchReport(c)(benchRunner(c).Dashboard(c.Context, bench.DashboardConfig{Trials: c.Int("trials"), Loads: c.Int("loads"),
					Updates: c.Int("updates"), MetricsTrials: c.Int("metrics-trials"), Scrapes: c.Int("scrapes")}))
			},
		}},
	}
}

// benchRunner runs benchmarks as this binary, with progress on stderr.
func benchRunner(c *cli.Context) *bench.Runner {
	self, err := os.Executable()
	if err != nil {
		self = os.Args[0]
	}
	return &bench.Runner{Version: version, Bin: proc.Binary{Path: self}, Log: c.App.ErrWriter}
}

// benchReport writes a benchmark's report to --out, or returns its error.
func benchReport(c *cli.Context) func(bench.Report, error) error {
	return func(r bench.Report, err error) error {
		if err != nil {
			return err
		}
		return writeJSON(c, c.String("out"), r)
	}
}

// partialReport writes a benchmark's report so far to --out (nothing when
// the report goes to stdout), so that a run cut off by a deadline leaves
// what it measured; the final report replaces it.
func partialReport(c *cli.Context) func(bench.Report) {
	path := c.String("out")
	if path == "" {
		return nil
	}
	return func(r bench.Report) {
		if err := writeJSON(c, path, r); err != nil {
			fmt.Fprintf(c.App.ErrWriter, "bench: partial report: %v\n", err)
		}
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
