// Package trainer trains a model: the single-node (and, later, data-parallel)
// training step, evaluation, and the trainer agent loop. It knows nothing of
// raft.
package trainer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"runtime"
	"slices"

	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer/graph"
	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/loraft/loraft/trainer/metrics"
	"github.com/loraft/loraft/trainer/model"
	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// Hyper are the training hyperparameters.
type Hyper struct {
	Epochs      int     `json:"epochs"`
	BatchSize   int     `json:"batch_size"`
	GradAccum   int     `json:"grad_accum"`
	LR          float64 `json:"learning_rate"`
	WarmupRatio float64 `json:"warmup_ratio"`
	WeightDecay float64 `json:"weight_decay"`
	MaxGradNorm float64 `json:"max_grad_norm"`
	// ClassWeights weights the loss by inverse class frequency in the train split.
	ClassWeights bool   `json:"class_weights"`
	Seed         uint64 `json:"seed"`
	// EvalEvery evaluates on the validation split every N steps (0: at the end only).
	EvalEvery int `json:"eval_every"`
	EvalBatch int `json:"eval_batch"`
	// Calibrate fits temperature scaling on the validation split at the end.
	Calibrate bool `json:"calibrate"`
}

// DefaultHyper are loraft's defaults for LoRA fine-tuning of BERT.
func DefaultHyper() Hyper {
	return Hyper{Epochs: 3, BatchSize: 16, GradAccum: 1, LR: 2e-4, WarmupRatio: 0.06, WeightDecay: 0,
		MaxGradNorm: 1.0, Seed: 42, EvalBatch: 64, Calibrate: true}
}

// ErrHyper reports invalid hyperparameters.
var ErrHyper = errors.New("invalid hyperparameters")

// Validate checks the hyperparameters.
func (h Hyper) Validate() error {
	switch {
	case h.Epochs < 1:
		return fmt.Errorf("%w: epochs %d, want ≥ 1", ErrHyper, h.Epochs)
	case h.BatchSize < 1 || h.GradAccum < 1 || h.EvalBatch < 1:
		return fmt.Errorf("%w: batch sizes and grad accumulation must be ≥ 1", ErrHyper)
	case !(h.LR > 0) || math.IsInf(h.LR, 0):
		return fmt.Errorf("%w: learning rate %v, want > 0", ErrHyper, h.LR)
	case h.WarmupRatio < 0 || h.WarmupRatio >= 1:
		return fmt.Errorf("%w: warmup ratio %v, want in [0, 1)", ErrHyper, h.WarmupRatio)
	case h.WeightDecay < 0 || h.MaxGradNorm < 0:
		return fmt.Errorf("%w: weight decay and max grad norm must be ≥ 0", ErrHyper)
	}
	return nil
}

// Data is a read, split and tokenized dataset.
type Data struct {
	DS     *shard.Dataset
	Split  *shard.Split
	Tokens *shard.Tokens
	PadID  int32
}

// Progress is reported after every optimizer step and every evaluation.
type Progress struct {
	Step, Steps int
	Epoch       int
	Loss        float64 // mean training loss of this step
	LR          float64
	Eval        *metrics.Report // set after an evaluation
}

// Result is what a training run produced.
type Result struct {
	Steps int
	// Losses is the training loss of every step.
	Losses []float64
	// History holds the validation evaluations in order (step, report).
	History []EvalPoint
	// Val and Test are the final reports (calibrated when Temperature ≠ 1).
	Val, Test   metrics.Report
	Temperature float64
}

// EvalPoint is one validation evaluation during training.
type EvalPoint struct {
	Step   int            `json:"step"`
	Report metrics.Report `json:"report"`
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

// Options are the optional parts of a training run.
type Options struct {
	// Progress is called after every step and evaluation.
	Progress func(Progress)
	// Resume continues from a checkpointed state instead of step 0.
	Resume *State
	// CheckpointEvery saves a checkpoint every N steps and at the end (0: only at the end, when Save is set).
	CheckpointEvery int
	// Save persists a state. A failed save is reported to SaveFailed and
	// training goes on: the next save tries again.
	Save       func(ctx context.Context, st *State) error
	SaveFailed func(step int, err error)
	// Manifest is stored in every checkpoint so a resumed run rebuilds the same model.
	Manifest Manifest
	// Rank and World place this trainer in a data-parallel run (World 0 or 1:
	// alone). Every rank reads the whole dataset and takes its rows of each
	// global batch; Reducer sums the gradients. Only rank 0 evaluates and saves.
	Rank, World int
	Reducer     Reducer
}

// Train fine-tunes m on d's train split. It must run on a goroutine locked to
// its OS thread (gotch's error and grad state are per thread); Train locks it.
func Train(ctx context.Context, m *model.Model, d *Data, h Hyper, o Options) (*Result, error) {
	progress := o.Progress
	world := max(o.World, 1)
	if o.Rank < 0 || o.Rank >= world || (world > 1 && o.Reducer == nil) {
		return nil, fmt.Errorf("train: rank %d of world %d needs a reducer for world > 1", o.Rank, world)
	}
	lead := o.Rank == 0 // evaluates, calibrates and saves
	if err := h.Validate(); err != nil {
		return nil, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	train := d.Split.Train
	if len(train) == 0 {
		return nil, fmt.Errorf("train: the train split of %s is empty", d.DS.Name)
	}
	global := h.BatchSize * h.GradAccum
	stepsPerEpoch := shard.StepsPerEpoch(len(train), global)
	total := stepsPerEpoch * h.Epochs
	warmup := int(math.Ceil(h.WarmupRatio * float64(total)))

	weights, err := classWeights(d, h.ClassWeights, m.Opts.Device)
	if err != nil {
		return nil, err
	}
	if weights != nil {
		defer weights.MustDrop()
	}
	opt, err := NewAdamW(m.Params(), h.WeightDecay)
	if err != nil {
		return nil, err
	}
	defer opt.Drop()

	res := &Result{Steps: total, Temperature: 1}
	step := 0
	if st := o.Resume; st != nil {
		if st.DatasetSHA256 != d.DS.SHA256 {
			return nil, fmt.Errorf("resume: the checkpoint was trained on dataset %.12s, this is %.12s", st.DatasetSHA256, d.DS.SHA256)
		}
		if st.Step > total {
			return nil, fmt.Errorf("resume: the checkpoint is at step %d, beyond this run's %d steps", st.Step, total)
		}
		if err := m.SetParams(st.Params); err != nil {
			return nil, fmt.Errorf("resume: %w", err)
		}
		if err := opt.Restore(st.M, st.V, st.OptStep); err != nil {
			return nil, fmt.Errorf("resume: %w", err)
		}
		step = st.Step
		res.Losses, res.History = slices.Clone(st.Losses), slices.Clone(st.History)
	}
	save := func(lr float64) {
		if o.Save == nil || !lead {
			return
		}
		// Every checkpoint carries a validation score so the best one can be picked.
		if len(d.Split.Val) > 0 && (len(res.History) == 0 || res.History[len(res.History)-1].Step != step) {
			rep, _, err := Evaluate(ctx, m, d, d.Split.Val, h.EvalBatch, 1)
			if err != nil {
				if o.SaveFailed != nil {
					o.SaveFailed(step, err)
				}
				return
			}
			res.History = append(res.History, EvalPoint{step, rep})
		}
		st, err := snapshot(m, opt, d, step, stepsPerEpoch, lr, res, o.Manifest)
		if err == nil {
			err = o.Save(ctx, st)
		}
		if err != nil && o.SaveFailed != nil {
			o.SaveFailed(step, err)
		}
	}
	for epoch := step / stepsPerEpoch; epoch < h.Epochs; epoch++ {
		order := shard.EpochOrder(len(train), h.Seed, epoch)
		all, err := shard.RankBatches(order, global, 0, 1)
		if err != nil {
			return nil, err
		}
		batches, err := shard.RankBatches(order, global, o.Rank, world)
		if err != nil {
			return nil, err
		}
		for bi, b := range batches {
			if epoch*stepsPerEpoch+bi < step {
				continue // done before the checkpoint this run resumed from
			}
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("train: %w", err)
			}
			lr := LinearSchedule(h.LR, step, warmup, total)
			loss, err := trainStep(ctx, m, d, rowsOf(train, b), rowsOf(train, all[bi]), h, weights, opt, lr,
				stepSeed(h.Seed^uint64(o.Rank)*0x9E3779B97F4A7C15, step), o.Reducer, step)
			if err != nil {
				return nil, fmt.Errorf("train step %d: %w", step, err)
			}
			step++
			res.Losses = append(res.Losses, loss)
			p := Progress{Step: step, Steps: total, Epoch: epoch, Loss: loss, LR: lr}
			if lead && h.EvalEvery > 0 && step%h.EvalEvery == 0 && step < total && len(d.Split.Val) > 0 {
				rep, _, err := Evaluate(ctx, m, d, d.Split.Val, h.EvalBatch, 1)
				if err != nil {
					return nil, err
				}
				res.History = append(res.History, EvalPoint{step, rep})
				p.Eval = &rep
			}
			if progress != nil {
				progress(p)
			}
			if o.CheckpointEvery > 0 && step%o.CheckpointEvery == 0 && step < total {
				save(lr)
			}
		}
	}
	lastLR := LinearSchedule(h.LR, max(0, step-1), warmup, total)
	if !lead {
		return res, nil
	}
	// Final evaluation; temperature fitted on validation, applied to both.
	if len(d.Split.Val) > 0 {
		rep, logits, err := Evaluate(ctx, m, d, d.Split.Val, h.EvalBatch, 1)
		if err != nil {
			return nil, err
		}
		res.History = append(res.History, EvalPoint{step, rep})
		if h.Calibrate {
			labels := labelsOf(d, d.Split.Val)
			t, err := metrics.FitTemperature(logits, labels)
			if err != nil {
				return nil, fmt.Errorf("temperature scaling: %w", err)
			}
			res.Temperature = t
			if rep, err = evaluateLogits(logits, labels, t); err != nil {
				return nil, err
			}
		}
		res.Val = rep
		if progress != nil {
			progress(Progress{Step: step, Steps: total, Epoch: h.Epochs - 1, Eval: &rep})
		}
	}
	if len(d.Split.Test) > 0 {
		if res.Test, _, err = Evaluate(ctx, m, d, d.Split.Test, h.EvalBatch, res.Temperature); err != nil {
			return nil, err
		}
	}
	save(lastLR) // the final checkpoint carries the calibrated reports
	return res, nil
}

// trainStep runs forward/backward over this rank's rows of the step in
// micro-batches, sums the gradients across ranks (red, when the run has more
// than one), clips, and applies one AdamW update. denomRows are all rows of
// the step on every rank: the loss is Σ w_y·ℓ / Σ w_y over all of them, so
// accumulation and data parallelism give the same gradient as one big batch.
// It returns the step's loss (summed over ranks).
func trainStep(ctx context.Context, m *model.Model, d *Data, rows, denomRows []int, h Hyper, weights *ts.Tensor, opt *AdamW, lr float64, seed int64, red Reducer, step int) (float64, error) {
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
	return total, nil
}

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
	logits := m.Forward(g, ids, mask, true)
	loss := g.Scale(g.NLLSum(g.LogSoftmax(logits, -1), labels, weights), scale)
	if err := g.Err(); err != nil {
		return 0, err
	}
	if err := loss.Backward(); err != nil {
		return 0, fmt.Errorf("backward: %w", err)
	}
	// Float64Value reads in place; gotch's Float64Values leaves a float64 copy for the GC.
	return loss.Float64Value(nil)
}

// batchTensors uploads a batch's ids, mask and labels (int64) to device; g owns them.
func batchTensors(g *graph.Graph, b shard.Batch, device gotch.Device) (ids, mask, labels *ts.Tensor, err error) {
	mk := func(data []int64, shape ...int64) *ts.Tensor {
		t, err := ts.NewTensorFromData(data, shape)
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

// snapshot copies the run's state to the host for a checkpoint.
func snapshot(m *model.Model, opt *AdamW, d *Data, step, stepsPerEpoch int, lr float64, res *Result, man Manifest) (*State, error) {
	params, err := m.ParamValues()
	if err != nil {
		return nil, err
	}
	mm, vv, err := opt.Moments()
	if err != nil {
		return nil, err
	}
	man.Temperature = res.Temperature
	return &State{Step: step, Epoch: step / stepsPerEpoch, Batch: step % stepsPerEpoch, OptStep: opt.Step, LR: lr,
		WorldSize: 1, DatasetSHA256: d.DS.SHA256, Losses: slices.Clone(res.Losses), History: slices.Clone(res.History),
		Val: res.Val, Test: res.Test, Manifest: man, Params: params, M: mm, V: vv}, nil
}
