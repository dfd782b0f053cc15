package trainer

import (
	"fmt"
	"strings"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/shard"
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
	return gotch.Float, fmt.Errorf("compute dtype %q: want fp32 or bf16", s)
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
