package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"runtime"
	"strconv"
	"time"
)

// TrainerConfig tunes the trainer benchmark.
type TrainerConfig struct {
	// Config, Device and Compute are the model's (as StepConfig's).
	Config, Device, Compute string
	// Seq, Batch and Steps shape every run.
	Seq, Batch, Steps int
	// SoakSteps is the number of tiny-config steps of the RSS soak (0: skip).
	SoakSteps int
	// Python runs Reference (bench/reference/qlora_step.py): PyTorch eager
	// doing the identical step on the same libtorch.
	Python, Reference string
}

// Trainer measures the QLoRA step's speed and memory (NF4 and fp32 bases,
// each a `loraft bench step` process) against the PyTorch reference, and
// the RSS growth over a long soak of tiny steps.
func (r *Runner) Trainer(ctx context.Context, cfg TrainerConfig) (Report, error) {
	common := []string{"--config", cfg.Config, "--device", cfg.Device, "--compute-dtype", cfg.Compute,
		"--seq", strconv.Itoa(cfg.Seq), "--batch", strconv.Itoa(cfg.Batch), "--steps", strconv.Itoa(cfg.Steps)}
	run := func(name string, cmd func(context.Context) *exec.Cmd) (map[string]any, error) {
		r.logf("bench trainer: %s …\n", name)
		ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
		defer cancel()
		c := cmd(ctx)
		var out, errb bytes.Buffer
		c.Stdout, c.Stderr = &out, &errb
		if err := c.Run(); err != nil {
			return nil, fmt.Errorf("%s: %w\n%s", name, err, errb.String())
		}
		var v map[string]any
		if err := json.Unmarshal(lastLine(out.Bytes()), &v); err != nil {
			return nil, fmt.Errorf("%s printed no JSON: %w\n%s", name, err, out.String())
		}
		return v, nil
	}
	step := func(args ...string) func(context.Context) *exec.Cmd {
		return func(ctx context.Context) *exec.Cmd {
			return r.Bin.Command(ctx, append([]string{"bench", "step"}, args...)...)
		}
	}
	goNF4, err := run("go nf4", step(append([]string{"--base", "nf4"}, common...)...))
	if err != nil {
		return nil, err
	}
	goFP32, err := run("go fp32 base", step(append([]string{"--base", "fp32"}, common...)...))
	if err != nil {
		return nil, err
	}
	dtype := "fp32"
	if cfg.Compute == "bf16" {
		dtype = "bf16"
	}
	ref, err := run("torch reference", func(ctx context.Context) *exec.Cmd {
		return exec.CommandContext(ctx, cfg.Python, cfg.Reference, "--config", cfg.Config,
			"--device", cfg.Device, "--dtype", dtype, "--seq", strconv.Itoa(cfg.Seq),
			"--batch", strconv.Itoa(cfg.Batch), "--steps", strconv.Itoa(cfg.Steps), "--warmup", "1",
			"--threads", strconv.Itoa(runtime.NumCPU()), "--json")
	})
	if err != nil {
		return nil, err
	}
	report := Report{
		"date": time.Now().UTC().Format(time.RFC3339), "loraft": r.Version, "cpus": runtime.NumCPU(),
		"config": cfg.Config, "device": cfg.Device, "dtype": cfg.Compute,
		"seq": cfg.Seq, "batch": cfg.Batch, "steps": cfg.Steps,
		"go_samples_per_s":           goNF4["samples_per_s"],
		"torch_samples_per_s":        ref["samples_per_s"],
		"ratio":                      num(goNF4["samples_per_s"]) / num(ref["samples_per_s"]),
		"peak_rss_mb":                goNF4["peak_rss_mb"],
		"peak_rss_mb_fp32_base":      goFP32["peak_rss_mb"],
		"torch_peak_rss_mb":          ref["peak_rss_mb"],
		"base_bytes":                 goNF4["base_bytes"],
		"bits_per_param":             goNF4["bits_per_param"],
		"go_fp32_base_samples_per_s": goFP32["samples_per_s"],
		"runs":                       map[string]any{"go_nf4": goNF4, "go_fp32_base": goFP32, "torch": ref},
	}
	if n := cfg.SoakSteps; n > 0 {
		soak, err := run("soak", step("--config", "tiny", "--base", "nf4", "--seq", "128", "--batch", "8",
			"--steps", strconv.Itoa(n), "--warmup", "0", "--rss-at", "200", "--rss-at", strconv.Itoa(n)))
		if err != nil {
			return nil, err
		}
		rss, _ := soak["rss_at_mb"].([]any)
		if len(rss) == 2 {
			report["rss_growth_mb_per_1k_steps"] = (num(rss[1]) - num(rss[0])) / (float64(n-200) / 1000)
			report["rss_growth_method"] = "VmRSS after runtime/debug.FreeOSMemory at step 200 and at the last step, bert-tiny, seq 128, batch 8, NF4"
		}
		report["soak"] = soak
	}
	return report, nil
}
