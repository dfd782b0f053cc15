package trainer

import (
	"fmt"
	"strings"

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

// computeName is the inverse of ParseCompute.
func computeName(d gotch.DType) string {
	if d == gotch.BFloat16 {
		return "bf16"
	}
	return "fp32"
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

// OpenAdapter rebuilds the model an adapter directory was trained as: the
// same base (weightsPath overrides the recorded weights file), the adapter's
// LoRA tensors and classifier.
func OpenAdapter(dir, weightsPath string, device gotch.Device) (*model.Model, Manifest, error) {
	man, err := LoadManifest(dir)
	if err != nil {
		return nil, man, err
	}
	compute, err := ParseCompute(man.Base.Compute)
	if err != nil {
		return nil, man, fmt.Errorf("%w: %v", ErrAdapter, err)
	}
	params, err := LoadAdapterParams(dir)
	if err != nil {
		return nil, man, err
	}
	w, _, _, err := BaseWeights(man.Base, weightsPath)
	if err != nil {
		return nil, man, err
	}
	m, err := model.New(man.Base.Config, w, nil, nil, model.Options{Quant: man.Base.Quant, Compute: compute,
		Device: device, LoRA: man.LoRA, Labels: len(man.Labels), Seed: man.Hyper.Seed})
	if err != nil {
		return nil, man, err
	}
	if err := m.SetParams(params); err != nil {
		m.Drop()
		return nil, man, fmt.Errorf("%w: %s: %v", ErrAdapter, dir, err)
	}
	return m, man, nil
}
