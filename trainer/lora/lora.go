// Package lora implements LoRA adapters with HF PEFT's semantics: a frozen
// base Linear plus a trainable low-rank update,
//
//	y = base(x) + B·A·dropout(x) · scaling,   scaling = alpha/r (rsLoRA: alpha/√r),
//
// with A initialised kaiming-uniform (a = √5) and B zeros, so a fresh adapter
// is a no-op. Targets follow PEFT's target_modules matching. The package knows
// nothing of BERT: the base weight comes through the Frozen interface (dense
// or NF4, see trainer/model).
package lora

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/loraft/loraft/trainer/graph"
	"github.com/loraft/loraft/trainer/lora/loraconfig"
	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// AllLinear is the target_modules shorthand for every Linear layer but the
// classifier head (PEFT's "all-linear").
const AllLinear = loraconfig.AllLinear

// Config is a LoRA configuration, with PEFT's adapter_config.json names; its
// defaults and validation live in package loraconfig.
type Config = loraconfig.Config

// DefaultConfig is loraft's default LoRA configuration: r=8, alpha=16,
// dropout 0.05, on query and value (see loraconfig for why alpha and dropout
// differ from PEFT's).
func DefaultConfig() Config { return loraconfig.Default() }

// ErrConfig reports an invalid LoRA configuration.
var ErrConfig = loraconfig.ErrConfig

// ParseTargets reads target modules as flags and sweep specs write them:
// comma-separated names ("query,value") or "all-linear"; blanks are dropped.
func ParseTargets(s string) []string { return loraconfig.ParseTargets(s) }

// Frozen supplies a frozen base weight ([out, in]) in a compute dtype for one
// forward pass; the returned tensor belongs to g or outlives it (never the caller's to drop).
type Frozen interface {
	Weight(g *graph.Graph, dtype gotch.DType) *ts.Tensor
	// Shape is [out, in].
	Shape() [2]int64
}

// FrozenLinear is a Frozen that computes its own layer, x·Wᵀ + bias (no
// bias when nil), in x's dtype: an NF4 weight, whose backward dequantizes W
// again rather than have autograd keep it. Linear.Forward uses it where the
// base has it.
type FrozenLinear interface {
	Frozen
	Linear(g *graph.Graph, x, bias *ts.Tensor) *ts.Tensor
}

// Linear is a frozen Linear layer, optionally with a LoRA adapter.
type Linear struct {
	// Name is the module's HF path, e.g. bert.encoder.layer.0.attention.self.query.
	Name string
	Base Frozen
	// Bias is the frozen bias (float32) or nil.
	Bias *ts.Tensor
	// A [r, in] and B [out, r] are the trainable adapter (float32, requires
	// grad), nil when the layer is not a target.
	A, B    *ts.Tensor
	Scaling float64
	Dropout float64
}

// NewAdapter creates A and B for l on device: A uniform in ±1/√in (PyTorch's
// kaiming_uniform_ with a = √5), drawn from rng so every machine gets the same
// bytes; B zeros.
func (l *Linear) NewAdapter(cfg Config, rng *rand.Rand, device gotch.Device) error {
	shape := l.Base.Shape()
	out, in := shape[0], shape[1]
	bound := 1 / math.Sqrt(float64(in))
	a := make([]float32, int64(cfg.Rank)*in)
	for i := range a {
		a[i] = float32((2*Uniform(rng) - 1) * bound)
	}
	at, err := ts.NewTensorFromData(a, []int64{int64(cfg.Rank), in})
	if err != nil {
		return fmt.Errorf("lora A for %s: %w", l.Name, err)
	}
	l.A, err = Trainable(at, device)
	if err != nil {
		return fmt.Errorf("lora A for %s: %w", l.Name, err)
	}
	bt, err := ts.Zeros([]int64{out, int64(cfg.Rank)}, gotch.Float, gotch.CPU)
	if err != nil {
		return fmt.Errorf("lora B for %s: %w", l.Name, err)
	}
	l.B, err = Trainable(bt, device)
	if err != nil {
		return fmt.Errorf("lora B for %s: %w", l.Name, err)
	}
	l.Scaling, l.Dropout = cfg.Scaling(), cfg.Dropout
	return nil
}

// Trainable moves t to device as a leaf tensor that requires grad, dropping t.
func Trainable(t *ts.Tensor, device gotch.Device) (*ts.Tensor, error) {
	moved := t
	if device != gotch.CPU {
		var err error
		moved, err = t.To(device, true)
		if err != nil {
			return nil, err
		}
	}
	leaf, err := moved.SetRequiresGrad(true, true)
	if err != nil {
		return nil, err
	}
	return leaf, nil
}

// Uniform is a float64 in [0, 1) from rng's 64-bit output, written out so the
// value stream never depends on math/rand's float conversion.
func Uniform(rng *rand.Rand) float64 {
	return float64(rng.Uint64()>>11) / (1 << 53)
}

// Forward computes the layer on x, doing the matrix products in dtype and
// returning the result in x's dtype (the residual stream stays float32 while
// bf16 compute runs the products).
func (l *Linear) Forward(g *graph.Graph, x *ts.Tensor, dtype gotch.DType, train bool) *ts.Tensor {
	var bias *ts.Tensor
	if l.Bias != nil {
		bias = g.To(l.Bias, dtype)
	}
	var y *ts.Tensor
	if fl, ok := l.Base.(FrozenLinear); ok {
		y = fl.Linear(g, g.To(x, dtype), bias)
	} else {
		y = g.Linear(g.To(x, dtype), l.Base.Weight(g, dtype), bias)
	}
	if l.A != nil {
		xd := g.Dropout(x, l.Dropout, train)
		a := g.Linear(g.To(xd, dtype), g.To(l.A, dtype), nil)
		b := g.Linear(a, g.To(l.B, dtype), nil)
		y = g.Add(y, g.Scale(b, l.Scaling))
	}
	if x == nil {
		return nil
	}
	return g.To(y, x.DType())
}

// Params returns the trainable tensors (A then B), or nil.
func (l *Linear) Params() []*ts.Tensor {
	if l.A == nil {
		return nil
	}
	return []*ts.Tensor{l.A, l.B}
}
