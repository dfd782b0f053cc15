package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/shard/wordpiece"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/loraft/loraft/trainer/model"
)

// EpochConfig is the dataset and model whose training epoch Epoch times
// with and without length bucketing.
type EpochConfig struct {
	// Data is a dataset CSV (Combined Data.csv's columns); Config a model
	// config name or config.json path.
	Data, Config string
	// MaxLen, Batch and Epochs shape the runs.
	MaxLen, Batch, Epochs int
	// Reps is how many times each setting runs, interleaved, its fastest
	// run kept (0: 2).
	Reps int
	// Device and Compute are the trainer's --device and --compute-dtype
	// ("" for cpu and fp32); Recompute its --grad-checkpoint.
	Device, Compute string
	Recompute       bool
}

// EpochRun is one timed training run of Epoch.
type EpochRun struct {
	BucketByLength bool    `json:"bucket_by_length"`
	Seconds        float64 `json:"seconds"`
	SamplesPerS    float64 `json:"samples_per_s"`
	// TokenSlots is the tokens the run's batches held, padding included;
	// RealTokens those that were text.
	TokenSlots int64   `json:"token_slots"`
	RealTokens int64   `json:"real_tokens"`
	ValMacroF1 float64 `json:"val_macro_f1"`
	FinalLoss  float64 `json:"final_loss"`
}

// Epoch trains the same model on the same data in this process, batches in
// plain shuffled order and length-bucketed
// (trainer.Hyper.BucketByLength), and reports each run's samples/s, how
// much of its batches was padding, and its validation macro-F1 (bucketing
// changes which rows share a batch, not what is learnt).
func (r *Runner) Epoch(ctx context.Context, cfg EpochConfig) (Report, error) {
	threads, err := libtorch.SetThreads()
	if err != nil {
		return nil, err
	}
	defer trainer.LockThread()()
	d, err := trainingData(ctx, cfg.Data, 0, cfg.MaxLen)
	if err != nil {
		return nil, err
	}
	sp := d.Split
	mc, err := model.LoadConfig(cfg.Config)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	device, err := trainer.ParseDevice(cfg.Device)
	if err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	compute, err := trainer.ParseCompute(cfg.Compute)
	if err != nil {
		return nil, err
	}
	runs := map[string]EpochRun{}
	// Twice each, interleaved, keeping each setting's faster run: the first
	// run in a process also pays for warming libtorch's allocator and
	// thread pool, and the machine may be shared.
	reps := cfg.Reps
	if reps <= 0 {
		reps = 2
	}
	var order []bool
	for range reps {
		order = append(order, false, true)
	}
	for _, bucket := range order {
		h := trainer.DefaultHyper()
		h.Epochs, h.BatchSize, h.Seed, h.BucketByLength = cfg.Epochs, cfg.Batch, 42, bucket
		m, err := model.New(mc, model.RandomWeights(mc, 1), nil, nil, model.Options{Quant: model.NF4, Compute: compute,
			Device: device, LoRA: lora.Config{Rank: 8, Alpha: 16, Dropout: 0.05, Targets: []string{"query", "value"}},
			Labels: shard.NumLabels, Seed: 1, Recompute: cfg.Recompute, ReleaseHost: true})
		if err != nil {
			return nil, err
		}
		run := EpochRun{BucketByLength: bucket}
		run.TokenSlots, run.RealTokens = epochTokens(d, h)
		start := time.Now()
		res, err := trainer.Train(ctx, m, d, h, trainer.Options{})
		m.Drop()
		if err != nil {
			return nil, fmt.Errorf("training (bucket_by_length %v): %w", bucket, err)
		}
		run.Seconds = time.Since(start).Seconds()
		run.SamplesPerS = float64(cfg.Epochs*len(sp.Train)) / run.Seconds
		run.ValMacroF1 = res.Val.MacroF1
		if n := len(res.Losses); n > 0 {
			run.FinalLoss = res.Losses[n-1]
		}
		name := map[bool]string{false: "padded", true: "bucketed"}[bucket]
		if prev, ok := runs[name]; !ok || run.Seconds < prev.Seconds {
			runs[name] = run
		}
	}
	return Report{"loraft": r.Version, "date": time.Now().UTC().Format(time.RFC3339), "data": cfg.Data, "rows_train": len(sp.Train), "config": cfg.Config, "max_len": cfg.MaxLen,
		"batch": cfg.Batch, "epochs": cfg.Epochs, "reps": reps, "threads": threads,
		"device": cfg.Device, "compute_dtype": cfg.Compute, "grad_checkpoint": cfg.Recompute,
		"note": "one process, the same seeds; padded: batches in shuffled order, each padded to its longest row; bucketed: " +
			"shard.BucketByLength (pools of 50 global batches sorted by length, batches shuffled); seconds include the end-of-run evaluation and calibration",
		"runs": runs, "speedup": runs["bucketed"].SamplesPerS / runs["padded"].SamplesPerS}, nil
}

// epochTokens counts the token slots (padding included) and real tokens of
// the batches Train will build for h over d's train split.
func epochTokens(d *trainer.Data, h trainer.Hyper) (slots, real int64) {
	train, global := d.Split.Train, h.BatchSize*h.GradAccum
	for e := range h.Epochs {
		order := shard.EpochOrder(len(train), h.Seed, e)
		if h.BucketByLength {
			order = shard.BucketByLength(order, func(p int) int { return len(d.Tokens.IDs[train[p]]) }, global, h.Seed, e)
		}
		for lo := 0; lo < len(order); lo += global {
			longest := 0
			b := order[lo:min(lo+global, len(order))]
			for _, p := range b {
				n := len(d.Tokens.IDs[train[p]])
				longest, real = max(longest, n), real+int64(n)
			}
			slots += int64(longest * len(b))
		}
	}
	return slots, real
}

// trainingData reads a dataset CSV (only its first rows when rows > 0),
// splits it with seed 42 and tokenizes it with bert-base-uncased's vocab to
// maxLen: the data of the training benchmarks.
func trainingData(ctx context.Context, path string, rows, maxLen int) (*trainer.Data, error) {
	ds, err := shard.ReadFile(path, shard.Options{})
	if err != nil {
		return nil, err
	}
	if rows > 0 && rows < len(ds.Rows) {
		ds.Rows = ds.Rows[:rows]
	}
	sp, err := shard.NewSplit(ds, 42, shard.DefaultRatios)
	if err != nil {
		return nil, err
	}
	tok, err := wordpiece.BertBaseUncased()
	if err != nil {
		return nil, err
	}
	toks, err := shard.Tokenize(ctx, ds, tok, maxLen, nil)
	if err != nil {
		return nil, err
	}
	return &trainer.Data{DS: ds, Split: sp, Tokens: toks, PadID: tok.PadID()}, nil
}
