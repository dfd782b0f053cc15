package bench

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/loraft/loraft/trainer/model"
	"github.com/loraft/loraft/trainer/nf4"
)

// DequantConfig tunes the dequantization benchmark.
type DequantConfig struct {
	// Config is the model config whose frozen Linear weights are built.
	Config string
	// Device holds the weights ("cpu", "cuda", "cuda:N"; "": cpu). Off
	// CPU, Dequantize is the tensor ops, so nf4_fused_ms is theirs too.
	Device string
	// Rounds is how many times each way is timed; the fastest counts (the
	// machine is shared, so the minimum is the least disturbed run).
	Rounds int
}

// Dequant measures what a frozen NF4 base costs per forward pass over an
// fp32 one: the time to rebuild every frozen Linear weight of the config
// (random values, NF4 with double quantization) in each compute dtype, by
// Dequantize's fused CPU loop and by the tensor ops it replaced, against
// the time the fp32 base spends converting its weights to the compute dtype
// (nothing in fp32). A training step dequantizes once, or twice with
// --grad-checkpoint; evaluation once per batch.
func (r *Runner) Dequant(ctx context.Context, cfg DequantConfig) (Report, error) {
	if cfg.Rounds < 1 {
		cfg.Rounds = 5
	}
	threads, err := libtorch.SetThreads()
	if err != nil {
		return nil, err
	}
	defer trainer.LockThread()()
	mc, err := model.LoadConfig(cfg.Config)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	device, err := trainer.ParseDevice(cfg.Device)
	if err != nil {
		return nil, err
	}
	host := model.RandomWeights(mc, 1)
	var names []string
	for name, t := range host {
		// The frozen Linears: every 2-D weight but the embedding tables.
		if len(t.Shape) == 2 && strings.HasSuffix(name, ".weight") && !strings.Contains(name, "embeddings") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var (
		quantized []*nf4.Weight
		dense     []*ts.Tensor
		params    int64
	)
	defer func() {
		for _, w := range quantized {
			_ = w.Drop()
		}
		for _, t := range dense {
			_ = t.Drop()
		}
	}()
	for _, name := range names {
		h := host[name]
		q, err := nf4.Quantize(h.Data, h.Shape, true)
		if err != nil {
			return nil, fmt.Errorf("quantizing %s: %w", name, err)
		}
		w, err := q.Upload(device)
		if err != nil {
			return nil, fmt.Errorf("uploading %s: %w", name, err)
		}
		quantized = append(quantized, w)
		t, err := libtorch.TensorOf(h.Data, h.Shape)
		if err != nil {
			return nil, fmt.Errorf("uploading %s: %w", name, err)
		}
		if device != gotch.CPU {
			d, err := t.To(device, true)
			if err != nil {
				return nil, fmt.Errorf("uploading %s to %v: %w", name, device, err)
			}
			t = d
		}
		dense = append(dense, t)
		params += int64(len(h.Data))
	}
	r.logf("bench dequant: %d frozen Linear weights, %.1fM parameters, %d threads, %s\n", len(names), float64(params)/1e6, threads, deviceName(cfg.Device))
	// wait lets a device's queued kernels finish, so the clock stops when
	// the weights exist, not when their kernels were launched.
	wait := func() error { return nil }
	if device.IsCuda() {
		wait = func() error { return ts.CudaSynchronize(device.Value) }
	}

	// forward times one pass of build over every weight, best of Rounds.
	forward := func(build func(i int) (*ts.Tensor, error)) (float64, error) {
		best := 0.0
		for round := 0; round < cfg.Rounds; round++ {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			if err := wait(); err != nil {
				return 0, err
			}
			start := time.Now()
			for i := range quantized {
				t, err := build(i)
				if err != nil {
					return 0, err
				}
				if err := t.Drop(); err != nil {
					return 0, err
				}
			}
			if err := wait(); err != nil {
				return 0, err
			}
			if ms := float64(time.Since(start).Microseconds()) / 1000; round == 0 || ms < best {
				best = ms
			}
			runtime.GC() // gotch's tensor wrappers: collect between rounds, not inside one
		}
		return best, nil
	}
	report := Report{
		"date": time.Now().UTC().Format(time.RFC3339), "loraft": r.Version, "cpus": runtime.NumCPU(), "threads": threads,
		"torch_version": libtorch.Describe().TorchVersion, "config": cfg.Config, "device": deviceName(cfg.Device), "weights": len(names), "params": params,
		"rounds": cfg.Rounds,
		"method": "ms to rebuild every frozen Linear weight once (one forward pass), best of rounds: nf4_fused_ms by Dequantize's " +
			"fused CPU loop, nf4_ops_ms by the tensor ops it replaced (DequantizeOps), fp32_base_ms the fp32 base's conversion to the " +
			"compute dtype (none in fp32); nf4_over_fp32_base_ms is what NF4 adds per forward pass",
	}
	for _, dt := range []struct {
		name  string
		dtype gotch.DType
	}{{"fp32", gotch.Float}, {"bf16", gotch.BFloat16}} {
		fused, err := forward(func(i int) (*ts.Tensor, error) { return quantized[i].Dequantize(dt.dtype) })
		if err != nil {
			return nil, fmt.Errorf("fused dequantize %s: %w", dt.name, err)
		}
		ops, err := forward(func(i int) (*ts.Tensor, error) { return quantized[i].DequantizeOps(dt.dtype) })
		if err != nil {
			return nil, fmt.Errorf("tensor-op dequantize %s: %w", dt.name, err)
		}
		cast := 0.0 // in fp32, graph.To returns the fp32 base's weight itself
		if dt.dtype != gotch.Float {
			if cast, err = forward(func(i int) (*ts.Tensor, error) { return dense[i].Totype(dt.dtype, false) }); err != nil {
				return nil, fmt.Errorf("fp32 base to %s: %w", dt.name, err)
			}
		}
		r.logf("bench dequant %s: fused %.1f ms, tensor ops %.1f ms, fp32 base %.1f ms per forward\n", dt.name, fused, ops, cast)
		report[dt.name] = map[string]any{
			"nf4_fused_ms": fused, "nf4_ops_ms": ops, "fp32_base_ms": cast,
			"fused_speedup":         ops / fused,
			"nf4_over_fp32_base_ms": fused - cast,
			"fused_ns_per_param":    fused * 1e6 / float64(params),
		}
	}
	return report, nil
}

// deviceName is a device flag's value as reports name it ("" is cpu).
func deviceName(flag string) string {
	if flag == "" {
		return "cpu"
	}
	return flag
}
