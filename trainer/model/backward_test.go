package model

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/loraft/loraft/trainer/graph"
	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// backwardGrads runs one Backward of m on a fixed padded batch after seeding
// libtorch with seed, and returns the loss, every parameter's gradient, and
// a draw from the generator afterwards (to compare its final state).
func backwardGrads(t *testing.T, m *Model, seed int64) (float64, map[string][]float64, int64) {
	t.Helper()
	g := graph.New()
	defer g.Drop()
	ids := g.Own(ts.MustOfSlice([]int64{101, 7, 8, 9, 55, 102, 101, 17, 102, 0, 0, 0}).MustView([]int64{2, 6}, true))
	mask := g.Own(ts.MustOfSlice([]int64{1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0}).MustView([]int64{2, 6}, true))
	labels := g.Own(ts.MustOfSlice([]int64{3, 5}))
	for _, p := range m.Params() {
		if gr := p.T.MustGrad(false); gr.MustDefined() {
			gr.MustZero_()
			gr.MustDrop()
		}
	}
	libtorch.ManualSeed(seed)
	loss, err := m.Backward(ids, mask, func(g *graph.Graph, logits *ts.Tensor) *ts.Tensor {
		return g.NLLSum(g.LogSoftmax(logits, -1), labels, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	after := ts.MustRandint(math.MaxInt32, []int64{1}, gotch.Int64, gotch.CPU)
	next := after.Int64Values()[0]
	after.MustDrop()
	grads := map[string][]float64{}
	for _, p := range m.Params() {
		gr := p.T.MustGrad(false)
		grads[p.Name] = gr.Float64Values()
		gr.MustDrop()
	}
	return loss, grads, next
}

// adaptedModel builds a model of c with weights w, LoRA (dropout 0.1) on
// targets, and every adapter parameter set to the same fixed nonzero values,
// so that models built alike compute alike and every gradient is nonzero.
func adaptedModel(t *testing.T, c Config, w Weights, quant Quant, targets []string, recompute bool) *Model {
	t.Helper()
	lc := lora.DefaultConfig()
	lc.Targets, lc.Dropout = targets, 0.1
	m, err := New(c, w, nil, nil, Options{Quant: quant, Compute: gotch.Float, Device: gotch.CPU,
		LoRA: lc, Labels: 7, Seed: 5, Recompute: recompute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Drop)
	vals, err := m.ParamValues()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(9, 9))
	for _, p := range m.Params() { // in a fixed order: both models get the same values
		v := vals[p.Name]
		for i := range v.Data {
			v.Data[i] = float32(rng.NormFloat64() * 0.05)
		}
	}
	if err := m.SetParams(vals); err != nil {
		t.Fatal(err)
	}
	return m
}

// gradDiff is the largest |want − got| over every parameter's gradient and
// the largest |want| (the scale); a missing or shorter gradient counts as
// infinitely far.
func gradDiff(want, got map[string][]float64) (worst, scale float64) {
	for name, w := range want {
		g := got[name]
		if len(g) != len(w) {
			return math.Inf(1), 0
		}
		for i := range w {
			worst = math.Max(worst, math.Abs(w[i]-g[i]))
			scale = math.Max(scale, math.Abs(w[i]))
		}
	}
	return worst, scale
}

// requireSameGrads fails t unless got's gradients are want's within 1e-5 of
// the largest, and returns that largest gradient.
func requireSameGrads(t *testing.T, want, got map[string][]float64) float64 {
	t.Helper()
	worst, scale := gradDiff(want, got)
	t.Logf("max |Δgrad| %.3g (largest gradient %.3g)", worst, scale)
	if scale == 0 || worst > 1e-5*scale {
		t.Fatalf("gradients differ by up to %v (largest %v)", worst, scale)
	}
	return scale
}

// keptWeight hides a Frozen's own Linear (lora.FrozenLinear), so that
// lora.Linear takes the weight and autograd keeps it for backward: the path
// NF4 layers took before nf4.Weight.Linear.
type keptWeight struct{ lora.Frozen }

// TestNF4LinearEqualsKeptWeight: NF4 layers that dequantize their weight
// again in backward (nf4.Weight.Linear) give the loss and gradients of
// layers whose dequantized weight autograd keeps, with dropout on and
// adapters on every Linear, with and without layer recomputation.
func TestNF4LinearEqualsKeptWeight(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c := micro()
	c.NumLayers = 2
	w := RandomWeights(c, 4)
	for _, recompute := range []bool{false, true} {
		t.Run(fmt.Sprint("recompute=", recompute), func(t *testing.T) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			again := adaptedModel(t, c, w, NF4, []string{lora.AllLinear}, recompute)
			kept := adaptedModel(t, c, w, NF4, []string{lora.AllLinear}, recompute)
			hidden := 0
			for _, l := range kept.linears {
				if _, ok := l.Base.(lora.FrozenLinear); ok {
					l.Base = keptWeight{l.Base}
					hidden++
				}
			}
			if hidden != 6*c.NumLayers+1 {
				t.Fatalf("%d NF4 layers compute their own product, want every frozen Linear (%d)", hidden, 6*c.NumLayers+1)
			}
			lossA, gradA, _ := backwardGrads(t, again, 42)
			lossK, gradK, _ := backwardGrads(t, kept, 42)
			if math.Abs(lossA-lossK) > 1e-6*math.Abs(lossK) {
				t.Fatalf("loss %v dequantizing again, %v keeping the weight", lossA, lossK)
			}
			requireSameGrads(t, gradK, gradA)
		})
	}
}

// TestRecomputeEqualsPlain: Backward with layer recomputation (keeping only
// each layer's input, dequantizing NF4 weights again in backward) gives the
// same loss and gradients as the plain backward through the whole graph,
// with dropout on, for NF4 and float32 bases, adapters on some or on every
// Linear, and leaves libtorch's generator in the same state. The adapters'
// B matrices are made nonzero first, so that every gradient is.
func TestRecomputeEqualsPlain(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c := micro()
	c.NumLayers = 3
	w := RandomWeights(c, 3)
	for _, tc := range []struct {
		quant   Quant
		targets []string
	}{
		{NF4, []string{"query", "value"}},
		{NF4, []string{lora.AllLinear}},
		{Dense, []string{"key", "output.dense"}},
	} {
		t.Run(fmt.Sprint(tc.quant, tc.targets), func(t *testing.T) {
			runtime.LockOSThread() // each subtest has a goroutine of its own
			defer runtime.UnlockOSThread()
			build := func(recompute bool) *Model { return adaptedModel(t, c, w, tc.quant, tc.targets, recompute) }
			plain, recompute := build(false), build(true)
			lossP, gradP, nextP := backwardGrads(t, plain, 42)
			lossR, gradR, nextR := backwardGrads(t, recompute, 42)
			if math.Abs(lossP-lossR) > 1e-6*math.Abs(lossP) {
				t.Fatalf("loss %v with recomputation, %v without", lossR, lossP)
			}
			if nextP != nextR {
				t.Fatalf("generator left in another state: next draw %d with recomputation, %d without", nextR, nextP)
			}
			scale := requireSameGrads(t, gradP, gradR)
			// The comparison can fail: another dropout seed moves the gradients.
			_, gradOther, _ := backwardGrads(t, recompute, 43)
			if moved, _ := gradDiff(gradP, gradOther); moved <= 1e-5*scale {
				t.Fatalf("dropout seed 43 gives the same gradients as 42 (max |Δ| %v): dropout is not in the test", moved)
			}
		})
	}
}

// TestInferEqualsForward: Infer, which frees each layer's intermediates as
// it goes, gives Forward's eval-mode logits bit for bit.
func TestInferEqualsForward(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c := micro()
	m := newModel(t, c, RandomWeights(c, 3), NF4)
	want := logits(t, m)
	g := graph.New()
	defer g.Drop()
	ids := g.Own(ts.MustOfSlice([]int64{101, 7, 8, 9, 102, 101, 17, 102, 0, 0}).MustView([]int64{2, 5}, true))
	mask := g.Own(ts.MustOfSlice([]int64{1, 1, 1, 1, 1, 1, 1, 1, 0, 0}).MustView([]int64{2, 5}, true))
	out := m.Infer(g, ids, mask)
	if err := g.Err(); err != nil {
		t.Fatal(err)
	}
	got := out.Float64Values()
	if len(got) != len(want) {
		t.Fatalf("%d logits, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("logit %d: Infer %v, Forward %v", i, got[i], want[i])
		}
	}
	if out.MustRequiresGrad() {
		t.Fatal("Infer's logits require grad")
	}
}

// TestReleaseHost: with ReleaseHost, New empties the caller's weight map as
// it uploads, and builds the same model, for both base storages.
func TestReleaseHost(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c := micro()
	for _, q := range []Quant{NF4, Dense} {
		want := logits(t, newModel(t, c, RandomWeights(c, 3), q))
		w := RandomWeights(c, 3)
		m, err := New(c, w, nil, nil, Options{Quant: q, Compute: gotch.Float, Device: gotch.CPU, LoRA: lora.DefaultConfig(),
			Labels: 7, Seed: 5, ReleaseHost: true})
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if len(w) != 0 {
			t.Errorf("%s: %d host tensors left in the map, want 0", q, len(w))
		}
		got := logits(t, m)
		m.Drop()
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s: logit %d: %v with ReleaseHost, %v without", q, i, got[i], want[i])
			}
		}
	}
}

// TestNewMissingWeight: a weight missing halfway through the build is an
// error naming it, and what was built is freed (no panic on the way out).
func TestNewMissingWeight(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c := micro()
	const missing = "bert.encoder.layer.1.output.dense.weight"
	for _, release := range []bool{false, true} {
		w := RandomWeights(c, 3)
		delete(w, missing)
		m, err := New(c, w, nil, nil, Options{Quant: NF4, Compute: gotch.Float, Device: gotch.CPU, LoRA: lora.DefaultConfig(),
			Labels: 7, Seed: 5, ReleaseHost: release})
		if m != nil || !errors.Is(err, ErrWeights) || !strings.Contains(err.Error(), missing) {
			t.Errorf("ReleaseHost %v: New = %v, %v; want ErrWeights naming %s", release, m, err, missing)
		}
	}
}
