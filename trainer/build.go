package trainer

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/loraft/loraft/trainer/model"
	"github.com/sugarme/gotch"
)

// ParseDevice maps "cpu", "cuda" or "cuda:N" to a gotch device; "cuda"
// without a visible GPU is an error rather than a silent fallback.
func ParseDevice(s string) (gotch.Device, error) {
	switch {
	case s == "" || s == "cpu":
		return gotch.CPU, nil
	case s == "cuda" || strings.HasPrefix(s, "cuda:"):
		if !gotch.CUDA.IsAvailable() {
			return gotch.CPU, fmt.Errorf("device %q: libtorch sees no CUDA device (run 'loraft version')", s)
		}
		var n uint
		if strings.HasPrefix(s, "cuda:") {
			if _, err := fmt.Sscanf(s, "cuda:%d", &n); err != nil {
				return gotch.CPU, fmt.Errorf("device %q: want cuda:N", s)
			}
		}
		return gotch.CudaBuilder(n), nil
	}
	return gotch.CPU, fmt.Errorf("device %q: want cpu, cuda or cuda:N", s)
}

// ParseCompute maps "fp32" or "bf16" to a dtype.
func ParseCompute(s string) (gotch.DType, error) {
	switch s {
	case "fp32", "float32", "":
		return gotch.Float, nil
	case "bf16", "bfloat16":
		return gotch.BFloat16, nil
	}
	return gotch.Float, fmt.Errorf("compute dtype %q: want fp32, bf16 or auto", s)
}

// ComputeProbe is what ResolveCompute decided and why.
type ComputeProbe struct {
	// Compute is the dtype chosen: "fp32" or "bf16".
	Compute string `json:"compute_dtype"`
	// FP32GFLOPS and BF16GFLOPS are the probe matmul's throughput (0 when
	// nothing was measured: a GPU, or a dtype given outright).
	FP32GFLOPS float64 `json:"fp32_gflops"`
	BF16GFLOPS float64 `json:"bf16_gflops"`
}

// bf16Pays is how much faster than float32 a bfloat16 matmul must run for
// auto to pick it: bf16 compute adds casts around every product, and a
// CPU without native bf16 arithmetic emulates it (0.06× on the AVX2
// development machines).
const bf16Pays = 1.3

// ResolveCompute turns a --compute-dtype value into "fp32" or "bf16". For
// "auto" it picks bf16 on a GPU, and on the CPU when a probe matmul the
// shape of a BERT-base projection runs at least bf16Pays times as fast in
// bf16 as in float32 (under half a second). It runs once, when a process starts:
// the dtype chosen is recorded in the run's manifest, so a resumed run
// never probes again and keeps its arithmetic.
func ResolveCompute(ctx context.Context, s string, device gotch.Device) (ComputeProbe, error) {
	if s != "auto" {
		dt, err := ParseCompute(s)
		if err != nil {
			return ComputeProbe{}, err
		}
		return ComputeProbe{Compute: map[gotch.DType]string{gotch.Float: "fp32", gotch.BFloat16: "bf16"}[dt]}, nil
	}
	if device.IsCuda() {
		return ComputeProbe{Compute: "bf16"}, nil
	}
	threads, err := libtorch.SetThreads()
	if err != nil {
		return ComputeProbe{}, err
	}
	var p ComputeProbe
	for _, c := range []struct {
		dt  gotch.DType
		out *float64
	}{{gotch.Float, &p.FP32GFLOPS}, {gotch.BFloat16, &p.BF16GFLOPS}} {
		r, err := libtorch.MeasureMatmul(ctx, 512, 768, 768, c.dt, threads, 150*time.Millisecond)
		if err != nil {
			return ComputeProbe{}, fmt.Errorf("compute dtype probe: %w", err)
		}
		*c.out = r.GFLOPS
	}
	p.Compute = "fp32"
	if p.BF16GFLOPS >= bf16Pays*p.FP32GFLOPS {
		p.Compute = "bf16"
	}
	return p, nil
}

// BaseWeights loads the frozen base the manifest's Base describes: the
// weights file (verifying its sha256 when the manifest records one) or the
// seeded random init. weightsPath overrides the recorded path.
func BaseWeights(b Base, weightsPath string) (model.Weights, *model.Tensor, *model.Tensor, error) {
	if weightsPath == "" {
		weightsPath = b.Weights
	}
	if weightsPath == "" {
		return model.RandomWeights(b.Config, b.InitSeed), nil, nil, nil
	}
	if b.WeightsSHA256 != "" {
		sum, err := FileSHA256(weightsPath)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("base weights: %w", err)
		}
		if sum != b.WeightsSHA256 {
			return nil, nil, nil, fmt.Errorf("base weights %s have sha256 %s, the adapter was trained on %s", weightsPath, sum, b.WeightsSHA256)
		}
	}
	return model.LoadWeights(weightsPath, b.Config, shard.NumLabels)
}

// FileSHA256 hashes a file (the weights' identity in a manifest).
func FileSHA256(path string) (string, error) { return checkpoint.FileSHA256(path) }
