// Package graph records the tensors of one forward/backward pass so they can
// be dropped together, and wraps the gotch ops the model uses so that the
// first libtorch error sticks and later ops become no-ops instead of calling
// into C with nil tensors.
//
// gotch frees C memory only when a tensor is dropped (the Go garbage collector
// sees only the small wrapper), and its Must… ops call log.Fatal on error. A
// Graph gives every intermediate an owner and turns errors into values:
//
//	g := graph.New()
//	defer g.Drop()
//	h := g.Linear(x, w, b)
//	y := g.Gelu(h)
//	if err := g.Err(); err != nil { … }
//
// Tensors passed in (parameters, inputs) are never dropped by the Graph; a
// tensor the caller wants to outlive the Graph is taken out with Keep.
// A Graph is not safe for concurrent use; gotch's error state is per OS
// thread, so the goroutine that uses it should be locked to its thread.
package graph

import (
	"fmt"
	"math"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// Graph owns the tensors created through it.
type Graph struct {
	err  error
	live []*ts.Tensor
}

// New returns an empty Graph.
func New() *Graph { return &Graph{} }

// Err returns the first error of any op, or nil.
func (g *Graph) Err() error { return g.err }

// Fail records err (with what failed) unless an error is already recorded.
func (g *Graph) Fail(what string, err error) {
	if g.err == nil && err != nil {
		g.err = fmt.Errorf("%s: %w", what, err)
	}
}

// Len is the number of tensors the Graph owns.
func (g *Graph) Len() int { return len(g.live) }

// Drop frees every tensor the Graph owns.
func (g *Graph) Drop() {
	for _, t := range g.live {
		_ = t.Drop()
	}
	g.live = g.live[:0]
}

// Keep removes t from the Graph so Drop leaves it alone; the caller owns it.
func (g *Graph) Keep(t *ts.Tensor) *ts.Tensor {
	for i := len(g.live) - 1; i >= 0; i-- {
		if g.live[i] == t {
			g.live = append(g.live[:i], g.live[i+1:]...)
			break
		}
	}
	return t
}

// Own adds an outside tensor to the Graph, to be dropped with it.
func (g *Graph) Own(t *ts.Tensor) *ts.Tensor {
	if t != nil {
		g.live = append(g.live, t)
	}
	return t
}

// ok reports whether ops may run: no error yet and every input present.
func (g *Graph) ok(in ...*ts.Tensor) bool {
	if g.err != nil {
		return false
	}
	for _, t := range in {
		if t == nil {
			g.err = fmt.Errorf("graph: nil input tensor")
			return false
		}
	}
	return true
}

// as returns a function that records an op's result (or its error) under
// the name what; it takes a gotch call's two results directly:
// g.as("matmul")(a.Matmul(b, false)).
func (g *Graph) as(what string) func(*ts.Tensor, error) *ts.Tensor {
	return func(t *ts.Tensor, err error) *ts.Tensor {
		if err != nil {
			g.Fail(what, err)
			return nil
		}
		g.live = append(g.live, t)
		return t
	}
}

// Linear is x·wᵀ + b (b may be nil).
func (g *Graph) Linear(x, w, b *ts.Tensor) *ts.Tensor {
	if !g.ok(x, w) {
		return nil
	}
	if b == nil {
		wt := g.as("linear transpose")(w.Transpose(0, 1, false))
		if wt == nil {
			return nil
		}
		return g.as("linear")(x.Matmul(wt, false))
	}
	return g.as("linear")(ts.Linear(x, w, b))
}

// Matmul is a·b.
func (g *Graph) Matmul(a, b *ts.Tensor) *ts.Tensor {
	if !g.ok(a, b) {
		return nil
	}
	return g.as("matmul")(a.Matmul(b, false))
}

// Add is a + b (broadcasting).
func (g *Graph) Add(a, b *ts.Tensor) *ts.Tensor {
	if !g.ok(a, b) {
		return nil
	}
	return g.as("add")(a.Add(b, false))
}

// Mul is a·b elementwise (broadcasting).
func (g *Graph) Mul(a, b *ts.Tensor) *ts.Tensor {
	if !g.ok(a, b) {
		return nil
	}
	return g.as("mul")(a.Mul(b, false))
}

// Scale is a·s for a scalar s.
func (g *Graph) Scale(a *ts.Tensor, s float64) *ts.Tensor {
	if !g.ok(a) {
		return nil
	}
	sc := ts.FloatScalar(s)
	defer sc.MustDrop()
	return g.as("scale")(a.MulScalar(sc, false))
}

// AddScalar is a + s.
func (g *Graph) AddScalar(a *ts.Tensor, s float64) *ts.Tensor {
	if !g.ok(a) {
		return nil
	}
	sc := ts.FloatScalar(s)
	defer sc.MustDrop()
	return g.as("add scalar")(a.AddScalar(sc, false))
}

// View reshapes a (which must be contiguous where needed).
func (g *Graph) View(a *ts.Tensor, shape ...int64) *ts.Tensor {
	if !g.ok(a) {
		return nil
	}
	return g.as("view")(a.Reshape(shape, false))
}

// Permute reorders a's dimensions.
func (g *Graph) Permute(a *ts.Tensor, dims ...int64) *ts.Tensor {
	if !g.ok(a) {
		return nil
	}
	return g.as("permute")(a.Permute(dims, false))
}

// Transpose swaps two dimensions.
func (g *Graph) Transpose(a *ts.Tensor, d0, d1 int64) *ts.Tensor {
	if !g.ok(a) {
		return nil
	}
	return g.as("transpose")(a.Transpose(d0, d1, false))
}

// Contiguous returns a contiguous copy when needed.
func (g *Graph) Contiguous(a *ts.Tensor) *ts.Tensor {
	if !g.ok(a) {
		return nil
	}
	return g.as("contiguous")(a.Contiguous(false))
}

// Softmax along dim, computed in a's dtype.
func (g *Graph) Softmax(a *ts.Tensor, dim int64) *ts.Tensor {
	if !g.ok(a) {
		return nil
	}
	return g.as("softmax")(a.Softmax(dim, a.DType(), false))
}

// LogSoftmax along dim in float32.
func (g *Graph) LogSoftmax(a *ts.Tensor, dim int64) *ts.Tensor {
	if !g.ok(a) {
		return nil
	}
	return g.as("log_softmax")(a.LogSoftmax(dim, gotch.Float, false))
}

// Dropout zeroes elements with probability p when train (scaling the rest
// by 1/(1−p)); otherwise it returns a unchanged.
func (g *Graph) Dropout(a *ts.Tensor, p float64, train bool) *ts.Tensor {
	if !g.ok(a) {
		return nil
	}
	if !train || p == 0 {
		return a
	}
	return g.as("dropout")(ts.Dropout(a, p, true))
}

// LayerNorm over the last dimension.
func (g *Graph) LayerNorm(a, w, b *ts.Tensor, eps float64) *ts.Tensor {
	if !g.ok(a, w, b) {
		return nil
	}
	shape := a.MustSize()
	return g.as("layer_norm")(ts.LayerNorm(a, shape[len(shape)-1:], w, b, eps, false))
}

// Gelu is the exact (erf) GELU that BERT uses.
func (g *Graph) Gelu(a *ts.Tensor) *ts.Tensor {
	if !g.ok(a) {
		return nil
	}
	return g.as("gelu")(a.Gelu("none", false))
}

// Tanh is tanh(a).
func (g *Graph) Tanh(a *ts.Tensor) *ts.Tensor {
	if !g.ok(a) {
		return nil
	}
	return g.as("tanh")(a.Tanh(false))
}

// Embedding looks rows of w up by ids.
func (g *Graph) Embedding(w, ids *ts.Tensor) *ts.Tensor {
	if !g.ok(w, ids) {
		return nil
	}
	return g.as("embedding")(ts.Embedding(w, ids, -1, false, false))
}

// Select takes index along dim (removing the dimension).
func (g *Graph) Select(a *ts.Tensor, dim, index int64) *ts.Tensor {
	if !g.ok(a) {
		return nil
	}
	return g.as("select")(a.Select(dim, index, false))
}

// To casts a to dtype (a itself when it already has it).
func (g *Graph) To(a *ts.Tensor, dtype gotch.DType) *ts.Tensor {
	if !g.ok(a) {
		return nil
	}
	if a.DType() == dtype {
		return a
	}
	return g.as("cast")(a.Totype(dtype, false))
}

// Sum is the sum of all of a's elements, as a float32 scalar.
func (g *Graph) Sum(a *ts.Tensor) *ts.Tensor {
	if !g.ok(a) {
		return nil
	}
	return g.as("sum")(a.Sum(gotch.Float, false))
}

// Leaf returns a new tensor sharing a's data but none of its history, as a
// leaf of its own graph that requires grad when grad is true: where a
// recomputation starts, so that backward stops there and leaves the
// gradient with respect to a in the leaf's Grad.
func (g *Graph) Leaf(a *ts.Tensor, grad bool) *ts.Tensor {
	if !g.ok(a) {
		return nil
	}
	d := g.as("detach")(a.Detach(false))
	if !grad || d == nil {
		return d
	}
	return g.as("requires_grad")(d.SetRequiresGrad(true, false))
}

// Grad returns a's accumulated gradient (owned by the Graph).
func (g *Graph) Grad(a *ts.Tensor) *ts.Tensor {
	if !g.ok(a) {
		return nil
	}
	return g.as("grad")(a.Grad(false))
}

// NLLSum is Σ −logp[i, target[i]]·weight[target[i]] (weight may be nil).
func (g *Graph) NLLSum(logp, target, weight *ts.Tensor) *ts.Tensor {
	if !g.ok(logp, target) {
		return nil
	}
	if weight == nil {
		weight = ts.NewTensor() // undefined tensor: no class weights
		defer weight.MustDrop()
	}
	const reductionSum = 2
	return g.as("nll_loss")(logp.NllLoss(target, weight, reductionSum, -100, false))
}

// AttentionMaskBias turns a [B, L] 0/1 mask into an additive [B, 1, 1, L]
// bias: 0 where attended, the dtype's lowest value where masked (as HF does).
func (g *Graph) AttentionMaskBias(mask *ts.Tensor, dtype gotch.DType) *ts.Tensor {
	if !g.ok(mask) {
		return nil
	}
	m := g.To(mask, dtype)
	inv := g.AddScalar(g.Scale(m, -1), 1) // 1 where masked
	low := -math.MaxFloat32
	if dtype == gotch.BFloat16 {
		low = -3.3895313892515355e38
	}
	bias := g.Scale(inv, low)
	if bias == nil {
		return nil
	}
	shape := mask.MustSize()
	return g.View(bias, shape[0], 1, 1, shape[1])
}
