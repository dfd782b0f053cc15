package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/loraft/loraft/trainer/model"
)

// TrainerConfig tunes the trainer benchmark.
type TrainerConfig struct {
	// Config and Device are the model's (as StepConfig's).
	Config, Device string
	// Computes are the compute dtypes to compare: "fp32", "bf16", or
	// "auto", which is bf16 where trainer.ResolveCompute's probe says it
	// pays and is otherwise skipped, the probe recorded as the reason.
	Computes []string
	// Seq, Batch and Steps shape every run.
	Seq, Batch, Steps int
	// Rounds runs every variant this many times, in turn (NF4, recompute,
	// fp32 base, PyTorch, then again, each round starting one variant
	// later), and pools their steps: on a shared machine a slow minute then
	// lands on all variants, not on one (< 1: 1).
	Rounds int
	// SoakSteps is the number of tiny-config steps of the RSS soak (0: skip).
	SoakSteps int
	// Python runs Reference (bench/reference/qlora_step.py): PyTorch eager
	// doing the identical step on the same libtorch.
	Python, Reference string
	// Progress, when set, receives the report so far after every run,
	// marked "partial": true, so that a benchmark cut off by a deadline
	// (gpu-check's) leaves what it measured. It must not keep the report.
	Progress func(Report)
}

// loraRank is the rank of `loraft bench step` and of the reference (their
// default): LoRA r=8 on query and value.
const loraRank = 8

// Trainer measures the QLoRA step's speed and memory against PyTorch eager
// on the same libtorch, for each compute dtype: the NF4 base, the NF4 base
// with layer recomputation (--grad-checkpoint) and an fp32 base, each a
// `loraft bench step` process of its own (peak RSS is per process), and
// the reference with explicit casts and, for bf16, under torch.autocast.
// It reports each run's matmul FLOPs per step against the matmul
// throughput libtorch reaches here (the roofline fraction), and the RSS
// growth over a long soak of tiny steps. With Rounds > 1 the variants run in
// turn, round after round, and each variant's steps are pooled. On a CUDA
// device each run's peak device memory above the idle device's is sampled
// with nvidia-smi (gpu_mem_peak_mb).
func (r *Runner) Trainer(ctx context.Context, cfg TrainerConfig) (Report, error) {
	mc, err := model.LoadConfig(cfg.Config)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	device, err := trainer.ParseDevice(cfg.Device)
	if err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	threads, err := libtorch.SetThreads()
	if err != nil {
		return nil, err
	}
	report := Report{
		"date": time.Now().UTC().Format(time.RFC3339), "loraft": r.Version, "cpus": runtime.NumCPU(),
		"config": cfg.Config, "device": cfg.Device, "seq": cfg.Seq, "batch": cfg.Batch, "steps": cfg.Steps,
		"roofline_method": "matmul FLOPs per step (Linear, attention and LoRA products, forward and backward, plus the recomputed " +
			"encoder forward with --grad-checkpoint; frozen weights get no weight gradient) ÷ (mean step time × the GFLOP/s of a " +
			"512×768×768 libtorch matmul in the compute dtype, the faster of two 1-s measurements in this command, before and after the runs)",
	}
	var dtypes []string
	for _, c := range cfg.Computes {
		p, err := trainer.ResolveCompute(ctx, c, device)
		if err != nil {
			return nil, err
		}
		if c == "auto" {
			report["auto_probe"] = p
			if p.Compute != "bf16" {
				report["bf16_skipped"] = fmt.Sprintf("auto: a bf16 matmul runs at %.1f GFLOP/s here against fp32's %.1f (%.2fx; "+
					"bf16 pays from %.1fx, e.g. with AVX512-BF16 or AMX): run with --compute-dtype bf16 to measure it anyway",
					p.BF16GFLOPS, p.FP32GFLOPS, p.BF16GFLOPS/p.FP32GFLOPS, 1.3)
				continue
			}
		}
		if !slices.Contains(dtypes, p.Compute) {
			dtypes = append(dtypes, p.Compute)
		}
	}

	// On a GPU, each variant's device memory is sampled from outside the
	// process, the same way for loraft and the reference (gpuMemory).
	var gpu *gpuMemory
	if i, ok := cudaIndex(cfg.Device); ok {
		g := nvidiaSMIMemory(i)
		gpu = &g
		report["gpu_mem_method"] = "nvidia-smi memory.used of the device, sampled every 100 ms while each run's process lives, " +
			"peak minus the value before it started: CUDA context, allocator cache and tensors, the same for loraft and PyTorch " +
			"(the reference's cuda_peak_mem_mb is torch.cuda.max_memory_allocated, tensors only)"
	}
	run := func(name string, gpu *gpuMemory, cmd func(context.Context) *exec.Cmd) (map[string]any, error) {
		r.logf("bench trainer: %s …\n", name)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
		defer cancel()
		c := cmd(ctx)
		var out, errb bytes.Buffer
		c.Stdout, c.Stderr = &out, &errb
		var stop func() (float64, error)
		var gpuErr error
		if gpu != nil {
			stop, gpuErr = gpu.watch(ctx)
		}
		err := c.Run()
		var gpuPeak float64
		if stop != nil {
			gpuPeak, gpuErr = stop()
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w\n%s", name, err, errb.String())
		}
		var v map[string]any
		if err := json.Unmarshal(lastLine(out.Bytes()), &v); err != nil {
			return nil, fmt.Errorf("%s printed no JSON: %w\n%s", name, err, out.String())
		}
		switch {
		case gpuErr != nil: // a figure missing, not a benchmark failed
			r.logf("bench trainer: %s: no GPU memory figure: %v\n", name, gpuErr)
			v["gpu_mem_error"] = gpuErr.Error()
		case stop != nil:
			v["gpu_mem_peak_mb"] = gpuPeak
		}
		return v, nil
	}
	step := func(args ...string) func(context.Context) *exec.Cmd {
		return func(ctx context.Context) *exec.Cmd {
			return r.Bin.Command(ctx, append([]string{"bench", "step"}, args...)...)
		}
	}
	reference := func(args ...string) func(context.Context) *exec.Cmd {
		return func(ctx context.Context) *exec.Cmd {
			return exec.CommandContext(ctx, cfg.Python, append([]string{cfg.Reference, "--config", cfg.Config,
				"--device", cfg.Device, "--seq", strconv.Itoa(cfg.Seq), "--batch", strconv.Itoa(cfg.Batch),
				"--steps", strconv.Itoa(cfg.Steps), "--warmup", "1", "--rank", strconv.Itoa(loraRank),
				"--threads", strconv.Itoa(threads), "--json"}, args...)...)
		}
	}
	// progress hands cfg.Progress the report with dt's runs so far (its
	// summary comes once all of them have run).
	progress := func(dt string, runs map[string]map[string]any) {
		if cfg.Progress == nil {
			return
		}
		done, had := report[dt]
		report[dt], report["partial"] = map[string]any{"runs": runs}, true
		cfg.Progress(report)
		delete(report, "partial")
		if had {
			report[dt] = done
		} else {
			delete(report, dt)
		}
	}
	for _, dt := range dtypes {
		common := []string{"--config", cfg.Config, "--device", cfg.Device, "--compute-dtype", dt,
			"--seq", strconv.Itoa(cfg.Seq), "--batch", strconv.Itoa(cfg.Batch), "--steps", strconv.Itoa(cfg.Steps)}
		type variant struct {
			name string
			cmd  func(context.Context) *exec.Cmd
		}
		variants := []variant{
			{"go_nf4", step(append([]string{"--base", "nf4"}, common...)...)},
			{"go_nf4_grad_checkpoint", step(append([]string{"--base", "nf4", "--grad-checkpoint"}, common...)...)},
			{"go_fp32_base", step(append([]string{"--base", "fp32"}, common...)...)},
			{"torch", reference("--dtype", dt)},
		}
		if dt == "bf16" {
			variants = append(variants, variant{"torch_autocast", reference("--dtype", "fp32", "--autocast")})
		}
		dtype, _ := trainer.ParseCompute(dt)
		// The matmul rate is measured before and after the runs and the
		// faster counts: one 1-s probe during a slow minute of a shared
		// machine would make the roofline fraction look better than it is.
		mmBefore, err := libtorch.MeasureMatmul(ctx, 512, 768, 768, dtype, threads, time.Second)
		if err != nil {
			return nil, err
		}
		runs := map[string]map[string]any{}
		failures := 0
		for round := range max(1, cfg.Rounds) {
			for _, v := range rotate(variants, round) {
				res, err := run(fmt.Sprintf("%s %s (round %d)", dt, v.name, round+1), gpu, v.cmd)
				if err != nil {
					// One variant failing (the reference on an untried
					// device, say) must not lose the others' figures.
					r.logf("bench trainer: %v\n", err)
					if _, failed := runs[v.name]["error"]; !failed {
						runs[v.name] = map[string]any{"error": lastLines(err.Error(), 20)}
					}
					failures++
					progress(dt, runs)
					continue
				}
				if _, failed := runs[v.name]["error"]; !failed {
					runs[v.name] = pool(runs[v.name], res, cfg.Batch)
				}
				progress(dt, runs)
			}
		}
		if failures == len(variants)*max(1, cfg.Rounds) {
			return nil, fmt.Errorf("every %s run failed; the first: %v", dt, runs["go_nf4"]["error"])
		}
		mmAfter, err := libtorch.MeasureMatmul(ctx, 512, 768, 768, dtype, threads, time.Second)
		if err != nil {
			return nil, err
		}
		gflops := max(mmBefore.GFLOPS, mmAfter.GFLOPS)
		flops := map[bool]float64{false: stepFLOPs(mc, cfg.Batch, cfg.Seq, false), true: stepFLOPs(mc, cfg.Batch, cfg.Seq, true)}
		summary := map[string]any{"matmul_gflops": gflops, "matmul_gflops_before_after": []float64{mmBefore.GFLOPS, mmAfter.GFLOPS},
			"step_gflop": flops[false] / 1e9, "step_gflop_grad_checkpoint": flops[true] / 1e9}
		for name, v := range runs {
			if mean := num(v["step_s_mean"]); mean > 0 {
				v["roofline_fraction"] = flops[name == "go_nf4_grad_checkpoint"] / (mean * gflops * 1e9)
			}
			summary[name+"_samples_per_s"] = v["samples_per_s"]
			summary[name+"_peak_rss_mb"] = v["peak_rss_mb"]
			if g, ok := v["gpu_mem_peak_mb"]; ok {
				summary[name+"_gpu_mem_peak_mb"] = g
			}
		}
		perS := func(name string) float64 { return num(runs[name]["samples_per_s"]) }
		nf4 := perS("go_nf4")
		summary["nf4_cost_over_fp32_base"] = cost(perS("go_fp32_base"), nf4)
		// the least disturbed steps
		summary["nf4_cost_over_fp32_base_fastest_step"] = cost(num(runs["go_nf4"]["step_s_min"]), num(runs["go_fp32_base"]["step_s_min"]))
		summary["grad_checkpoint_time_cost"] = cost(nf4, perS("go_nf4_grad_checkpoint"))
		summary["go_over_torch"] = ratio(nf4, perS("torch"))
		if dt == "bf16" {
			summary["go_over_torch_autocast"] = ratio(nf4, perS("torch_autocast"))
		}
		summary["roofline_fraction"] = runs["go_nf4"]["roofline_fraction"]
		summary["runs"] = runs
		report[dt] = summary
	}
	if fp, ok := report["fp32"].(map[string]any); ok {
		// The keys earlier reports had (bench allreduce reads go_samples_per_s).
		runs := fp["runs"].(map[string]map[string]any)
		report["go_samples_per_s"], report["torch_samples_per_s"] = fp["go_nf4_samples_per_s"], fp["torch_samples_per_s"]
		report["ratio"] = fp["go_over_torch"]
		report["peak_rss_mb"], report["peak_rss_mb_fp32_base"] = fp["go_nf4_peak_rss_mb"], fp["go_fp32_base_peak_rss_mb"]
		report["peak_rss_mb_grad_checkpoint"], report["torch_peak_rss_mb"] = fp["go_nf4_grad_checkpoint_peak_rss_mb"], fp["torch_peak_rss_mb"]
		report["go_fp32_base_samples_per_s"] = fp["go_fp32_base_samples_per_s"]
		report["base_bytes"], report["bits_per_param"] = runs["go_nf4"]["base_bytes"], runs["go_nf4"]["bits_per_param"]
		report["peak_rss_note"] = "loraft's peak_rss_mb is the training steps' (VmHWM reset after building the model; setup_peak_rss_mb " +
			"in each run holds the random base's float32 host copy); the reference's is the whole process's ru_maxrss"
	}
	// Issue #15's bf16 goals, where bf16 ran: NF4 in bf16 at least 2× our
	// fp32 step and 1.2× PyTorch eager bf16, NF4 at most 10% over the fp32
	// base (null where a run they need is missing).
	if bf, ok := report["bf16"].(map[string]any); ok {
		g := map[string]any{"goals": "nf4_bf16_over_nf4_fp32 >= 2, go_over_torch_bf16 >= 1.2, nf4_cost_over_fp32_base <= 0.10",
			"nf4_bf16_over_nf4_fp32": nil, "go_over_torch_bf16": bf["go_over_torch"],
			"go_over_torch_autocast": bf["go_over_torch_autocast"], "nf4_cost_over_fp32_base": bf["nf4_cost_over_fp32_base"]}
		if fp, ok := report["fp32"].(map[string]any); ok {
			g["nf4_bf16_over_nf4_fp32"] = ratio(num(bf["go_nf4_samples_per_s"]), num(fp["go_nf4_samples_per_s"]))
		}
		report["bf16_goals"] = g
	}
	if n := cfg.SoakSteps; n > 0 {
		soak, err := run("soak", nil, step("--config", "tiny", "--base", "nf4", "--seq", "128", "--batch", "8",
			"--steps", strconv.Itoa(n), "--warmup", "0", "--rss-at", "200", "--rss-at", strconv.Itoa(n)))
		if err != nil {
			return nil, err
		}
		rss, _ := soak["rss_at_mb"].([]any)
		if len(rss) == 2 {
			report["rss_growth_mb_per_1k_steps"] = (num(rss[1]) - num(rss[0])) / (float64(n-200) / 1000)
			report["rss_growth_method"] = "VmRSS after runtime/debug.FreeOSMemory at step 200 and at the last step, bert-tiny, seq 128, batch 8, NF4; " +
				"training trims the C heap every 100 steps (libtorch.TrimHeap)"
		}
		report["soak"] = soak
	}
	return report, nil
}

// rotate is s starting at its element r (mod len(s)): round r of the
// trainer benchmark runs its variants in this order, so that no variant
// always runs first (after the previous round's last) or last.
func rotate[T any](s []T, r int) []T {
	if len(s) == 0 {
		return nil
	}
	r %= len(s)
	return append(slices.Clone(s[r:]), s[:r]...)
}

// ratio is a/b, or nil (JSON null) unless both are positive: a figure whose
// run failed or is missing.
func ratio(a, b float64) any {
	if a > 0 && b > 0 {
		return a / b
	}
	return nil
}

// cost is a/b − 1, how much more a is than b, or nil as ratio.
func cost(a, b float64) any {
	if r, ok := ratio(a, b).(float64); ok {
		return r - 1
	}
	return nil
}

// pool merges run b into a, an earlier round of the same variant (nil for
// the first): their timed steps pooled, the mean, median and samples/s
// recomputed over all of them, the peaks the larger. Other fields are a's.
func pool(a, b map[string]any, batch int) map[string]any {
	if a == nil {
		b["rounds"] = 1
		return b
	}
	a["rounds"] = a["rounds"].(int) + 1
	var steps []float64
	for _, r := range []map[string]any{a, b} {
		list, _ := r["step_s"].([]any)
		for _, v := range list {
			steps = append(steps, num(v))
		}
	}
	for _, k := range []string{"peak_rss_mb", "eval_peak_rss_mb", "setup_peak_rss_mb", "gpu_mem_peak_mb"} {
		if _, ok := b[k]; ok {
			a[k] = max(num(a[k]), num(b[k]))
		}
	}
	if len(steps) == 0 {
		return a
	}
	pooled := make([]any, len(steps))
	sum := 0.0
	for i, v := range steps {
		pooled[i], sum = v, sum+v
	}
	a["step_s"], a["step_s_mean"], a["step_s_p50"] = pooled, sum/float64(len(steps)), median(steps)
	a["step_s_min"] = slices.Min(steps)
	a["samples_per_s"] = float64(batch) / (sum / float64(len(steps)))
	return a
}

// stepFLOPs counts the matrix-product FLOPs of one training step of c on
// batch×seq tokens with LoRA r=loraRank on query and value: forward, and
// backward with no weight gradient for the frozen Linears (one product for
// the input gradient, as many FLOPs as forward) but two for attention's
// products and the LoRA factors; with recompute, the encoder's forward once
// more. Elementwise ops, softmax and LayerNorm are not counted.
func stepFLOPs(c model.Config, batch, seq int, recompute bool) float64 {
	H, I, L := float64(c.HiddenSize), float64(c.IntermediateSize), float64(c.NumLayers)
	tokens, b, s := float64(batch*seq), float64(batch), float64(seq)
	linear := 2 * tokens * (4*H*H + 2*H*I) * L // q, k, v, attention output, intermediate, output
	attention := 2 * 2 * b * s * s * H * L     // QKᵀ and probs·V over all heads
	lora := 2 * tokens * 2 * 2 * H * loraRank * L
	pooler := 2 * b * H * H
	encoder := linear + attention + lora
	flops := (encoder + pooler) + (linear + 2*attention + 2*lora + pooler)
	if recompute {
		flops += encoder
	}
	return flops
}
