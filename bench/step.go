package bench

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"time"

	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/loraft/loraft/trainer/model"
)

// StepConfig is one model whose training steps Step times.
type StepConfig struct {
	// Config is a model config name or config.json path; Base is "nf4" or
	// "fp32"; Compute, Device as the trainer's --compute-dtype and --device.
	Config, Base, Compute, Device string
	// Seq and Batch shape the synthetic batches.
	Seq, Batch int
	// Steps are timed after Warmup untimed ones.
	Steps, Warmup int
	// RSSAt lists step numbers after which RSS is recorded (a soak).
	RSSAt []int
	// Recompute runs each encoder layer again in backward (--grad-checkpoint).
	Recompute bool
}

// StepResult is what `loraft bench step` prints.
type StepResult struct {
	Impl        string    `json:"impl"`
	Config      string    `json:"config"`
	Base        string    `json:"base"`
	Compute     string    `json:"dtype"`
	Recompute   bool      `json:"grad_checkpoint"`
	Device      string    `json:"device"`
	Seq         int       `json:"seq"`
	Batch       int       `json:"batch"`
	Steps       int       `json:"steps"`
	Threads     int       `json:"threads"`
	StepSeconds []float64 `json:"step_s"`
	StepSMean   float64   `json:"step_s_mean"`
	StepSP50    float64   `json:"step_s_p50"`
	StepSMin    float64   `json:"step_s_min"`
	SamplesPerS float64   `json:"samples_per_s"`
	PeakRSSMB   float64   `json:"peak_rss_mb"`
	SetupPeakMB float64   `json:"setup_peak_rss_mb"`
	// EvalPeakMB is the peak RSS of evaluating one batch of EvalRows rows
	// (trainer.Logits, the evaluation batch size) after the training steps.
	EvalPeakMB    float64   `json:"eval_peak_rss_mb,omitempty"`
	EvalRows      int       `json:"eval_rows,omitempty"`
	BaseBytes     int64     `json:"base_bytes"`
	BitsPerParam  float64   `json:"bits_per_param"`
	Trainable     int64     `json:"trainable_params"`
	RSSAtMB       []float64 `json:"rss_at_mb,omitempty"`
	RSSAtStep     []int     `json:"rss_at_step,omitempty"`
	GoHeapAtMB    []float64 `json:"go_heap_at_mb,omitempty"`
	SetupSeconds  float64   `json:"setup_s"`
	TorchVersion  string    `json:"torch_version"`
	CUDAAvailable bool      `json:"cuda"`
}

// Step times training steps of one model on synthetic batches in this
// process. Its peak RSS is the process's, so `loraft bench trainer` runs it
// in a process of its own for each model.
func Step(ctx context.Context, cfg StepConfig) (*StepResult, error) {
	threads, err := libtorch.SetThreads()
	if err != nil {
		return nil, err
	}
	defer trainer.LockThread()()
	start := time.Now()
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
		return nil, fmt.Errorf("compute dtype: %w", err)
	}
	lc := lora.Config{Rank: 8, Alpha: 16, Dropout: 0.05, Targets: []string{"query", "value"}}
	m, err := model.New(mc, model.RandomWeights(mc, 1), nil, nil, model.Options{Quant: model.Quant(cfg.Base),
		Compute: compute, Device: device, LoRA: lc, Labels: shard.NumLabels, Seed: 1, Recompute: cfg.Recompute, ReleaseHost: true})
	if err != nil {
		return nil, err
	}
	defer m.Drop()
	debug.FreeOSMemory() // the host copy of the random base is garbage now
	st, err := trainer.NewStepTimer(m, trainer.SyntheticData(4*cfg.Batch, cfg.Seq, 1), cfg.Batch)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	var trainable int64
	for _, p := range m.Params() {
		trainable += int64(p.T.Numel())
	}
	res := &StepResult{Impl: "go", Config: cfg.Config, Base: cfg.Base, Compute: cfg.Compute, Recompute: cfg.Recompute,
		Device: cfg.Device, Seq: cfg.Seq, Batch: cfg.Batch, Steps: cfg.Steps, Threads: threads,
		BaseBytes: m.BaseBytes(), BitsPerParam: 8 * float64(m.BaseBytes()) / float64(m.BaseParams()),
		Trainable: trainable, TorchVersion: libtorch.Describe().TorchVersion, CUDAAvailable: device.IsCuda()}
	res.SetupSeconds = time.Since(start).Seconds()
	// Building the model holds the random base's float32 host copy (as
	// loading a checkpoint does), a peak that says nothing of training's:
	// record it, then reset the high-water mark so that peak_rss_mb is the
	// training steps' alone.
	res.SetupPeakMB = float64(procStatusKB("VmHWM")) / 1024
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return nil, fmt.Errorf("resetting the peak RSS after setup: %w", err)
	}
	for i := 0; i < cfg.Warmup+cfg.Steps; i++ {
		d, err := st.Step(ctx)
		if err != nil {
			return nil, err
		}
		if i >= cfg.Warmup {
			res.StepSeconds = append(res.StepSeconds, d.Seconds())
		}
		if slices.Contains(cfg.RSSAt, i+1) {
			// Collect and return freed Go memory first: otherwise the
			// sample partly shows where the GC happens to be in its cycle.
			debug.FreeOSMemory()
			res.RSSAtStep = append(res.RSSAtStep, i+1)
			res.RSSAtMB = append(res.RSSAtMB, float64(procStatusKB("VmRSS"))/1024)
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			res.GoHeapAtMB = append(res.GoHeapAtMB, float64(ms.HeapInuse)/(1<<20))
		}
	}
	if len(res.StepSeconds) > 0 {
		sum := 0.0
		for _, v := range res.StepSeconds {
			sum += v
		}
		res.StepSMean, res.StepSP50 = sum/float64(len(res.StepSeconds)), median(res.StepSeconds)
		res.StepSMin = slices.Min(res.StepSeconds)
		res.SamplesPerS = float64(cfg.Batch) / res.StepSMean
	}
	res.PeakRSSMB = float64(procStatusKB("VmHWM")) / 1024
	if len(cfg.RSSAt) == 0 { // not in a soak, whose samples must stay the steps'
		res.EvalRows = trainer.DefaultHyper().EvalBatch
		d := trainer.SyntheticData(res.EvalRows, cfg.Seq, 2)
		debug.FreeOSMemory()
		if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
			return nil, fmt.Errorf("resetting the peak RSS before evaluation: %w", err)
		}
		if _, err := trainer.Logits(ctx, m, d, d.Split.Train, res.EvalRows); err != nil {
			return nil, fmt.Errorf("evaluation batch: %w", err)
		}
		res.EvalPeakMB = float64(procStatusKB("VmHWM")) / 1024
	}
	return res, nil
}
