package bench

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/loraft/loraft/trainer/model"
	"github.com/sugarme/gotch"
)

// ParityConfig is the training whose accuracy Parity compares between
// fp32 and bf16 compute.
type ParityConfig struct {
	// Data is a dataset CSV; Rows, when > 0, keeps only its first rows (bf16
	// is emulated, and slow, on CPUs without native bf16 arithmetic).
	Data string
	Rows int
	// Config is the model config; MaxLen, Batch, Epochs and LR shape training.
	Config                string
	MaxLen, Batch, Epochs int
	LR                    float64
	// Seeds is how many seeds (1, 2, …) train in each dtype.
	Seeds int
}

// ParityRun is one training run of Parity.
type ParityRun struct {
	Compute    string  `json:"compute_dtype"`
	Seed       uint64  `json:"seed"`
	ValMacroF1 float64 `json:"val_macro_f1"`
	ValAcc     float64 `json:"val_accuracy"`
	FinalLoss  float64 `json:"final_loss"`
	Seconds    float64 `json:"seconds"`
}

// Parity trains the same model on the same data with fp32 and with bf16
// compute (the frozen base and activations in bf16; adapters, optimizer and
// loss fp32) for each seed, and reports whether bf16's mean validation
// macro-F1 is within the seed-to-seed noise of fp32's: |Δ mean| ≤ 2 × the
// larger of the two standard deviations.
func (r *Runner) Parity(ctx context.Context, cfg ParityConfig) (Report, error) {
	threads, err := libtorch.SetThreads()
	if err != nil {
		return nil, err
	}
	defer trainer.LockThread()()
	d, err := trainingData(ctx, cfg.Data, cfg.Rows, cfg.MaxLen)
	if err != nil {
		return nil, err
	}
	ds, sp := d.DS, d.Split
	mc, err := model.LoadConfig(cfg.Config)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	f1 := map[string][]float64{}
	var runs []ParityRun
	for seed := uint64(1); seed <= uint64(cfg.Seeds); seed++ {
		for _, dt := range []string{"fp32", "bf16"} {
			r.logf("bench parity: seed %d %s …\n", seed, dt)
			compute, _ := trainer.ParseCompute(dt)
			h := trainer.DefaultHyper()
			h.Epochs, h.BatchSize, h.Seed, h.BucketByLength = cfg.Epochs, cfg.Batch, seed, true
			if cfg.LR > 0 {
				h.LR = cfg.LR
			}
			m, err := model.New(mc, model.RandomWeights(mc, 1), nil, nil, model.Options{Quant: model.NF4, Compute: compute,
				Device: gotch.CPU, LoRA: lora.Config{Rank: 8, Alpha: 16, Dropout: 0.05, Targets: []string{"query", "value"}},
				Labels: shard.NumLabels, Seed: seed, ReleaseHost: true})
			if err != nil {
				return nil, err
			}
			start := time.Now()
			res, err := trainer.Train(ctx, m, d, h, trainer.Options{})
			m.Drop()
			if err != nil {
				return nil, fmt.Errorf("training (%s, seed %d): %w", dt, seed, err)
			}
			run := ParityRun{Compute: dt, Seed: seed, ValMacroF1: res.Val.MacroF1, ValAcc: res.Val.Accuracy,
				Seconds: time.Since(start).Seconds()}
			if n := len(res.Losses); n > 0 {
				run.FinalLoss = res.Losses[n-1]
			}
			runs = append(runs, run)
			f1[dt] = append(f1[dt], run.ValMacroF1)
		}
	}
	mF, sF := meanStd(f1["fp32"])
	mB, sB := meanStd(f1["bf16"])
	noise := 2 * math.Max(sF, sB)
	return Report{"loraft": r.Version, "date": time.Now().UTC().Format(time.RFC3339), "data": cfg.Data, "rows": len(ds.Rows),
		"rows_train": len(sp.Train), "rows_val": len(sp.Val), "config": cfg.Config, "max_len": cfg.MaxLen, "batch": cfg.Batch,
		"epochs": cfg.Epochs, "lr": cfg.LR, "seeds": cfg.Seeds, "threads": threads,
		"fp32_macro_f1_mean": mF, "fp32_macro_f1_std": sF, "bf16_macro_f1_mean": mB, "bf16_macro_f1_std": sB,
		"macro_f1_diff": mB - mF, "noise": noise, "within_noise": math.Abs(mB-mF) <= noise,
		"method": "same data, split, base and LoRA init per seed; within_noise: |mean bf16 − mean fp32| ≤ 2 × the larger seed-to-seed std",
		"runs":   runs}, nil
}

// meanStd is the mean and sample standard deviation of xs.
func meanStd(xs []float64) (mean, std float64) {
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	for _, x := range xs {
		std += (x - mean) * (x - mean)
	}
	if len(xs) > 1 {
		std = math.Sqrt(std / float64(len(xs)-1))
	}
	return mean, std
}
