package trainer

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"

	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer/graph"
	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/loraft/loraft/trainer/model"
	"github.com/loraft/loraft/trainer/optim"
	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// This file is one optimizer step of the data-parallel loop: forward and
// backward per micro-batch, the gradients' all-reduce, clipping and the
// AdamW update.

// trainStep runs forward/backward over this rank's rows of the step in
// micro-batches, sums the gradients across ranks (red, when the run has more
// than one), clips, and applies one AdamW update. denomRows are all rows of
// the step on every rank: the loss is Σ w_y·ℓ / Σ w_y over all of them, so
// accumulation and data parallelism give the same gradient as one big batch.
// It returns the step's loss (summed over ranks).
func trainStep(ctx context.Context, m *model.Model, d *Data, rows, denomRows []int, h Hyper, weights *ts.Tensor, opt *optim.AdamW, lr float64, seed int64, red Reducer, step int) (float64, error) {
	libtorch.ManualSeed(seed)
	if err := zeroGrads(m.Params()); err != nil {
		return 0, err
	}
	denom := 0.0
	for _, r := range denomRows {
		denom += classWeight(weights, d, r)
	}
	total := 0.0
	for lo := 0; lo < len(rows); lo += h.BatchSize {
		micro := rows[lo:min(lo+h.BatchSize, len(rows))]
		l, err := microStep(m, d, micro, weights, 1/denom)
		if err != nil {
			return 0, err
		}
		total += l
	}
	if len(rows) == 0 {
		// This rank has no rows in the step's short last batch: a zero-weighted
		// pass still defines every gradient (as zeros) for the all-reduce.
		if _, err := microStep(m, d, denomRows[:1], weights, 0); err != nil {
			return 0, err
		}
	}
	defer libtorch.NoGrad()()
	if red != nil {
		var err error
		if total, err = reduceGrads(ctx, m.Params(), red, step, total); err != nil {
			return 0, err
		}
	}
	if h.MaxGradNorm > 0 {
		if err := clipGrads(m.Params(), h.MaxGradNorm); err != nil {
			return 0, err
		}
	}
	if err := opt.Update(lr); err != nil {
		return 0, err
	}
	if step%trimEvery == 0 {
		libtorch.TrimHeap()
	}
	return total, nil
}

// trimEvery is how often (in steps) trainStep returns the C heap's free
// pages to the OS. Without it RSS grew 9.8 MB per 1,000 bert-tiny steps
// (glibc keeps the chunks each step frees, scattered among live ones); with
// a trim every 100 steps 1.8 MB (bench/results/trainer.json's soak), and
// the soak's step time stayed at 0.07 s.
const trimEvery = 100

// Reducer sums a flat float32 buffer across the ranks of a run, in place,
// leaving byte-identical results on every rank (trainer/allreduce.Ring).
type Reducer interface {
	AllReduce(ctx context.Context, step uint64, buf []float32) error
}

// reduceGrads flattens every parameter's gradient (in Params order) and the
// local loss into one buffer, all-reduces it, and writes the sums back.
func reduceGrads(ctx context.Context, params []model.Param, red Reducer, step int, loss float64) (float64, error) {
	var buf []float32
	grads := make([]*ts.Tensor, len(params))
	defer func() {
		for _, g := range grads {
			if g != nil {
				g.MustDrop()
			}
		}
	}()
	for i, p := range params {
		g, err := p.T.Grad(false)
		if err != nil {
			return 0, err
		}
		grads[i] = g
		host, err := model.HostCopy(g)
		if err != nil {
			return 0, fmt.Errorf("gradient of %s: %w", p.Name, err)
		}
		buf = append(buf, host.Data...)
	}
	buf = append(buf, float32(loss))
	if err := red.AllReduce(ctx, uint64(step), buf); err != nil {
		return 0, fmt.Errorf("all-reduce of step %d: %w", step, err)
	}
	off := 0
	for i, p := range params {
		shape, err := grads[i].Size()
		if err != nil {
			return 0, err
		}
		n := 1
		for _, d := range shape {
			n *= int(d)
		}
		if err := model.Assign(grads[i], &model.Tensor{Shape: shape, Data: buf[off : off+n]}); err != nil {
			return 0, fmt.Errorf("gradient of %s: %w", p.Name, err)
		}
		off += n
	}
	return float64(buf[off]), nil
}

func microStep(m *model.Model, d *Data, rows []int, weights *ts.Tensor, scale float64) (float64, error) {
	g := graph.New()
	defer g.Drop()
	b := d.Tokens.Batch(d.DS, rows, d.PadID)
	ids, mask, labels, err := batchTensors(g, b, m.Opts.Device)
	if err != nil {
		return 0, err
	}
	return m.Backward(ids, mask, func(g *graph.Graph, logits *ts.Tensor) *ts.Tensor {
		return g.Scale(g.NLLSum(g.LogSoftmax(logits, -1), labels, weights), scale)
	})
}

// batchTensors uploads a batch's ids, mask and labels (int64) to device; g owns them.
func batchTensors(g *graph.Graph, b shard.Batch, device gotch.Device) (ids, mask, labels *ts.Tensor, err error) {
	mk := func(data []int64, shape ...int64) *ts.Tensor {
		t, err := libtorch.TensorOf(data, shape)
		if err != nil {
			g.Fail("batch upload", err)
			return nil
		}
		g.Own(t)
		if device == gotch.CPU {
			return t
		}
		moved, err := t.To(device, false)
		if err != nil {
			g.Fail("batch upload", err)
			return nil
		}
		return g.Own(moved)
	}
	ids = mk(b.IDs, int64(b.Size), int64(b.Len))
	mask = mk(b.Mask, int64(b.Size), int64(b.Len))
	labels = mk(b.Labels, int64(b.Size))
	return ids, mask, labels, g.Err()
}

func zeroGrads(params []model.Param) error {
	for _, p := range params {
		g, err := p.T.Grad(false)
		if err != nil {
			return err
		}
		if ok, _ := g.Defined(); ok {
			err = g.Zero_()
		}
		g.MustDrop()
		if err != nil {
			return fmt.Errorf("zeroing grad of %s: %w", p.Name, err)
		}
	}
	return nil
}

// clipGrads scales all gradients so their global L2 norm is at most maxNorm
// (torch.nn.utils.clip_grad_norm_).
func clipGrads(params []model.Param, maxNorm float64) error {
	var grads []*ts.Tensor
	defer func() {
		for _, g := range grads {
			g.MustDrop()
		}
	}()
	sq := 0.0
	for _, p := range params {
		g, err := p.T.Grad(false)
		if err != nil {
			return err
		}
		grads = append(grads, g)
		if ok, _ := g.Defined(); !ok {
			continue
		}
		n, err := g.Norm(false)
		if err != nil {
			return err
		}
		v, err := n.Float64Value(nil)
		n.MustDrop()
		if err != nil {
			return err
		}
		sq += v * v
	}
	norm := math.Sqrt(sq)
	if coef := maxNorm / (norm + 1e-6); coef < 1 {
		s := ts.FloatScalar(coef)
		defer s.MustDrop()
		for _, g := range grads {
			if ok, _ := g.Defined(); ok {
				if err := g.MulScalar_(s); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// classWeights returns inverse-frequency weights n/(K·n_c) over the train
// split as a [K] tensor, or nil when disabled.
func classWeights(d *Data, enabled bool, device gotch.Device) (*ts.Tensor, error) {
	if !enabled {
		return nil, nil
	}
	var counts [shard.NumLabels]int
	for _, r := range d.Split.Train {
		counts[d.DS.Rows[r].Label]++
	}
	w := make([]float32, shard.NumLabels)
	for c, n := range counts {
		if n > 0 {
			w[c] = float32(float64(len(d.Split.Train)) / float64(shard.NumLabels*n))
		}
	}
	t, err := ts.NewTensorFromData(w, []int64{shard.NumLabels})
	if err != nil {
		return nil, err
	}
	if device != gotch.CPU {
		return t.To(device, true)
	}
	return t, nil
}

func classWeight(weights *ts.Tensor, d *Data, row int) float64 {
	if weights == nil {
		return 1
	}
	v, _ := weights.Float64Value([]int64{int64(d.DS.Rows[row].Label)})
	return v
}

// rowsOf maps positions in the train split to dataset rows.
func rowsOf(train, positions []int) []int {
	out := make([]int, len(positions))
	for i, p := range positions {
		out[i] = train[p]
	}
	return out
}

func labelsOf(d *Data, rows []int) []int {
	out := make([]int, len(rows))
	for i, r := range rows {
		out[i] = int(d.DS.Rows[r].Label)
	}
	return out
}

// stepSeed derives libtorch's seed for one step from the run seed.
func stepSeed(seed uint64, step int) int64 {
	h := fnv.New64a()
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], seed)
	binary.LittleEndian.PutUint64(b[8:], uint64(step))
	h.Write(b[:])
	return int64(h.Sum64() >> 1)
}
