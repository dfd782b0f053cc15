package model

import (
	"fmt"
	"runtime"

	"github.com/loraft/loraft/trainer/graph"
	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/sugarme/gotch/ts"
)

// Loss turns a batch's logits into the scalar that training minimises,
// recording its ops in g.
type Loss func(g *graph.Graph, logits *ts.Tensor) *ts.Tensor

// Backward runs a training forward pass (dropout on) over ids and mask,
// applies loss to the logits, and accumulates the loss's gradient into
// every trainable parameter. It returns the loss's value.
//
// With Opts.Recompute it keeps only each encoder layer's input between the
// forward and the backward pass (layer-wise activation checkpointing, as
// transformers' gradient_checkpointing): the forward pass runs without
// autograd, and the backward pass runs each layer again, last to first,
// with autograd on and backpropagates through it alone. So at most one
// layer's activations are alive at a time. (A frozen NF4 Linear keeps
// nothing but its packed 4-bit weight between forward and backward either
// way, and dequantizes again in backward, as bitsandbytes' MatMul4Bit does:
// nf4.Weight.Linear.) It costs one more forward pass of the encoder. Each layer's dropout is seeded on its own (dropoutSeeds), so the
// recomputed layer draws the same masks and the gradients equal the plain
// path's.
func (m *Model) Backward(ids, mask *ts.Tensor, loss Loss) (float64, error) {
	// Grad mode and gotch's error state are per OS thread; the lock nests
	// with the caller's.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if !m.Opts.Recompute {
		g := graph.New()
		defer g.Drop()
		l := loss(g, m.Forward(g, ids, mask, true))
		if err := g.Err(); err != nil {
			return 0, err
		}
		if err := l.Backward(); err != nil {
			return 0, fmt.Errorf("backward: %w", err)
		}
		// Float64Value reads in place; gotch's Float64Values leaves a float64 copy for the GC.
		return l.Float64Value(nil)
	}
	return m.backwardRecompute(ids, mask, loss)
}

func (m *Model) backwardRecompute(ids, mask *ts.Tensor, loss Loss) (float64, error) {
	// keep owns what lives through the whole pass: the embeddings, the
	// attention bias and every layer's input.
	keep := graph.New()
	defer keep.Drop()

	// Forward without autograd, one layer's intermediates at a time.
	restore := libtorch.NoGrad()
	seeds := m.dropoutSeeds(keep, true)
	in := m.embed(keep, ids, mask, true, seeds)
	if in == nil {
		restore()
		return 0, keep.Err()
	}
	inputs := make([]*ts.Tensor, len(m.layers)+1)
	inputs[0] = in.h
	for i := range m.layers {
		g := graph.New()
		out := m.layer(g, i, inputs[i], in, true, seeds)
		if err := g.Err(); err != nil {
			g.Drop()
			restore()
			return 0, fmt.Errorf("layer %d forward: %w", i, err)
		}
		inputs[i+1] = keep.Own(g.Keep(out))
		g.Drop()
	}
	restore()

	// The head with autograd, from the last hidden states.
	g := graph.New()
	defer func() { g.Drop() }()
	top := g.Leaf(inputs[len(m.layers)], true)
	l := loss(g, m.head(g, top, true, seeds))
	if err := g.Err(); err != nil {
		return 0, err
	}
	if err := l.Backward(); err != nil {
		return 0, fmt.Errorf("backward of the head: %w", err)
	}
	value, err := l.Float64Value(nil)
	if err != nil {
		return 0, fmt.Errorf("loss value: %w", err)
	}
	grad := g.Keep(g.Grad(top)) // ∂loss/∂(last hidden states)
	if err := g.Err(); err != nil {
		return 0, err
	}
	g.Drop()

	// Each layer again, last to first: backpropagating Σ out·grad through
	// the layer leaves ∂loss/∂input in its input leaf and adds the layer's
	// share to the adapters' gradients. Layer 0's input (the frozen
	// embeddings) needs no gradient.
	for i := len(m.layers) - 1; i >= 0; i-- {
		if i == 0 && !m.layers[0].adapted() {
			grad.MustDrop()
			break
		}
		g = graph.New()
		x := g.Leaf(inputs[i], i > 0)
		seeds.use(i)
		s := g.Sum(g.Mul(m.layer(g, i, x, in, true, seeds), grad))
		if err := g.Err(); err != nil {
			grad.MustDrop()
			return 0, fmt.Errorf("layer %d recompute: %w", i, err)
		}
		err := s.Backward()
		grad.MustDrop()
		if err != nil {
			return 0, fmt.Errorf("backward of layer %d: %w", i, err)
		}
		if i > 0 {
			grad = g.Keep(g.Grad(x))
			if err := g.Err(); err != nil {
				return 0, err
			}
		}
		g.Drop()
	}
	seeds.use(afterSeed)
	return value, nil
}

// adapted reports whether any of the layer's Linears carries LoRA.
func (l encoderLayer) adapted() bool {
	for _, x := range []*lora.Linear{l.q, l.k, l.v, l.attnOut, l.inter, l.out} {
		if x.A != nil {
			return true
		}
	}
	return false
}

// Infer computes logits as Forward does in eval mode (no dropout), with
// autograd off, freeing each encoder layer's intermediates and its input as
// soon as the layer's output exists: evaluation and serving then need one
// layer's activations and dequantized weights at a time, not the whole
// network's (bert-base NF4, an evaluation batch of 64 rows of 128 tokens:
// the process peaked at 1.5 GB, against 10.9 GB through Forward).
// g owns the embeddings, the last hidden states and the head's tensors.
func (m *Model) Infer(g *graph.Graph, ids, mask *ts.Tensor) *ts.Tensor {
	runtime.LockOSThread() // grad mode is per OS thread
	defer runtime.UnlockOSThread()
	defer libtorch.NoGrad()()
	in := m.embed(g, ids, mask, false, nil)
	if in == nil {
		return nil
	}
	h := in.h
	for i := range m.layers {
		lg := graph.New()
		out := lg.Keep(m.layer(lg, i, h, in, false, nil))
		err := lg.Err()
		lg.Drop()
		if err != nil {
			g.Fail(fmt.Sprintf("layer %d", i), err)
			return nil
		}
		if h != in.h {
			h.MustDrop()
		}
		h = out
	}
	return m.head(g, g.Own(h), false, nil)
}
