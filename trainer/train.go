package trainer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"

	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer/metrics"
	"github.com/loraft/loraft/trainer/model"
	"github.com/loraft/loraft/trainer/optim"
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
	// BucketByLength makes each global batch of rows of similar length
	// (shard.BucketByLength), so batches padded to their longest row waste
	// little compute; the batches stay the same for any world size.
	BucketByLength bool `json:"bucket_by_length,omitempty"`
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
	// Authorized, when set, is checked before every step and checkpoint: an
	// error stops training with it (a trainer whose lease may have lapsed
	// does no more work on the trial).
	Authorized func() error
	// Generation is the coordinator's generation of the assignment this run
	// trains under (0 outside a coordinator); it is recorded in every
	// checkpoint with the world size.
	Generation uint64
}

// Train fine-tunes m on d's train split. It must run on a goroutine locked to
// its OS thread (gotch's error and grad state are per thread); Train locks it.
//
// A run goes through named steps: startRun sets it up (schedule, class
// weights, optimizer, resumed state); run.epoch runs the epoch's remaining
// steps, each a run.stepOn (one optimizer update, then the evaluation and
// run.checkpoint that fall on it); run.finish evaluates, calibrates and
// saves the final checkpoint.
func Train(ctx context.Context, m *model.Model, d *Data, h Hyper, o Options) (*Result, error) {
	if err := checkRun(d, h, o); err != nil {
		return nil, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r, err := startRun(ctx, m, d, h, o)
	if err != nil {
		return nil, err
	}
	defer r.drop()
	for epoch := r.step / r.stepsPerEpoch; epoch < h.Epochs; epoch++ {
		if err := r.epoch(epoch); err != nil {
			return nil, err
		}
	}
	return r.finish()
}

// run is one call of Train: its fixed plan, the tensors it owns, and where it is.
type run struct {
	ctx context.Context
	m   *model.Model
	d   *Data
	h   Hyper
	o   Options

	world int
	lead  bool  // rank 0: evaluates, calibrates and saves
	train []int // the train split's dataset rows
	// global is the rows of one optimizer step across all ranks.
	global, stepsPerEpoch, total, warmup int

	weights *ts.Tensor // class weights of the loss, or nil
	opt     *optim.AdamW

	res  *Result
	step int // optimizer steps done
}

// checkRun validates Train's arguments before anything is allocated.
func checkRun(d *Data, h Hyper, o Options) error {
	world := max(o.World, 1)
	if o.Rank < 0 || o.Rank >= world || (world > 1 && o.Reducer == nil) {
		return fmt.Errorf("train: rank %d of world %d needs a reducer for world > 1", o.Rank, world)
	}
	if err := h.Validate(); err != nil {
		return err
	}
	if len(d.Split.Train) == 0 {
		return fmt.Errorf("train: the train split of %s is empty", d.DS.Name)
	}
	return nil
}

// startRun is the set-up: the step plan and learning-rate schedule, the
// loss's class weights, a fresh AdamW, and, when o.Resume is set, the
// checkpointed parameters, moments, step and history. On error it frees what
// it made.
func startRun(ctx context.Context, m *model.Model, d *Data, h Hyper, o Options) (_ *run, err error) {
	r := &run{ctx: ctx, m: m, d: d, h: h, o: o, world: max(o.World, 1), lead: o.Rank == 0, train: d.Split.Train,
		res: &Result{Temperature: 1}}
	defer func() {
		if err != nil {
			r.drop()
		}
	}()
	r.global = h.BatchSize * h.GradAccum
	r.stepsPerEpoch = shard.StepsPerEpoch(len(r.train), r.global)
	r.total = r.stepsPerEpoch * h.Epochs
	r.warmup = int(math.Ceil(h.WarmupRatio * float64(r.total)))
	r.res.Steps = r.total

	if r.weights, err = classWeights(d, h.ClassWeights, m.Opts.Device); err != nil {
		return nil, err
	}
	if r.opt, err = optim.NewAdamW(m.Params(), h.WeightDecay); err != nil {
		return nil, err
	}
	if o.Resume != nil {
		if err := r.resume(o.Resume); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// resume continues from st: same data, parameters, moments, step and history.
func (r *run) resume(st *State) error {
	if st.DatasetSHA256 != r.d.DS.SHA256 {
		return fmt.Errorf("resume: the checkpoint was trained on dataset %.12s, this is %.12s", st.DatasetSHA256, r.d.DS.SHA256)
	}
	if st.Step > r.total {
		return fmt.Errorf("resume: the checkpoint is at step %d, beyond this run's %d steps", st.Step, r.total)
	}
	if err := r.m.SetParams(st.Params); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if err := r.opt.Restore(st.M, st.V, st.OptStep); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	r.step = st.Step
	r.res.Losses, r.res.History = slices.Clone(st.Losses), slices.Clone(st.History)
	return nil
}

// drop frees the run's tensors (not the model's).
func (r *run) drop() {
	if r.opt != nil {
		r.opt.Drop()
	}
	if r.weights != nil {
		r.weights.MustDrop()
	}
}

// epoch runs the steps of one epoch this run has not done yet: every rank
// orders the epoch the same way (a seeded permutation), takes its rows of
// each global batch, and normalises the loss by all ranks' rows.
func (r *run) epoch(epoch int) error {
	order := shard.EpochOrder(len(r.train), r.h.Seed, epoch)
	if r.h.BucketByLength {
		order = shard.BucketByLength(order, func(p int) int { return len(r.d.Tokens.IDs[r.train[p]]) }, r.global, r.h.Seed, epoch)
	}
	all, err := shard.RankBatches(order, r.global, 0, 1)
	if err != nil {
		return err
	}
	batches, err := shard.RankBatches(order, r.global, r.o.Rank, r.world)
	if err != nil {
		return err
	}
	for bi, b := range batches {
		if epoch*r.stepsPerEpoch+bi < r.step {
			continue // done before the checkpoint this run resumed from
		}
		if err := r.ctx.Err(); err != nil {
			return fmt.Errorf("train: %w", err)
		}
		if err := r.authorized(); err != nil {
			return err
		}
		if err := r.stepOn(epoch, rowsOf(r.train, b), rowsOf(r.train, all[bi])); err != nil {
			return err
		}
	}
	return nil
}

// stepOn is the per-step work: one optimizer update on rows (this rank's)
// with the loss normalised over denomRows (every rank's), then progress, and
// the evaluation and checkpoint that fall on the new step.
func (r *run) stepOn(epoch int, rows, denomRows []int) error {
	lr := optim.LinearSchedule(r.h.LR, r.step, r.warmup, r.total)
	loss, err := trainStep(r.ctx, r.m, r.d, rows, denomRows, r.h, r.weights, r.opt, lr,
		stepSeed(r.h.Seed^uint64(r.o.Rank)*0x9E3779B97F4A7C15, r.step), r.o.Reducer, r.step)
	if err != nil {
		return fmt.Errorf("train step %d: %w", r.step, err)
	}
	r.step++
	r.res.Losses = append(r.res.Losses, loss)
	p := Progress{Step: r.step, Steps: r.total, Epoch: epoch, Loss: loss, LR: lr}
	if r.lead && r.h.EvalEvery > 0 && r.step%r.h.EvalEvery == 0 && r.step < r.total && len(r.d.Split.Val) > 0 {
		rep, _, err := r.validate()
		if err != nil {
			return err
		}
		p.Eval = &rep
	}
	if r.o.Progress != nil {
		r.o.Progress(p)
	}
	if r.o.CheckpointEvery > 0 && r.step%r.o.CheckpointEvery == 0 && r.step < r.total {
		r.checkpoint(lr)
	}
	return nil
}

// authorized is Options.Authorized's answer (nil when unset).
func (r *run) authorized() error {
	if r.o.Authorized == nil {
		return nil
	}
	if err := r.o.Authorized(); err != nil {
		return fmt.Errorf("train step %d: %w", r.step, err)
	}
	return nil
}

// validate evaluates the model on the validation split (uncalibrated),
// records it in the history at the current step, and returns it with the
// logits.
func (r *run) validate() (metrics.Report, [][]float64, error) {
	rep, logits, err := Evaluate(r.ctx, r.m, r.d, r.d.Split.Val, r.h.EvalBatch, 1)
	if err != nil {
		return rep, nil, err
	}
	r.res.History = append(r.res.History, EvalPoint{r.step, rep})
	return rep, logits, nil
}

// checkpoint saves the run's state on the lead rank through o.Save, lr
// being the last update's rate. Every checkpoint carries a validation score
// at its step so the best one can be picked. A failure goes to o.SaveFailed
// and training goes on.
func (r *run) checkpoint(lr float64) {
	if r.o.Save == nil || !r.lead || r.authorized() != nil {
		return // an unauthorized run stops before its next step
	}
	failed := func(err error) {
		if r.o.SaveFailed != nil {
			r.o.SaveFailed(r.step, err)
		}
	}
	if h := r.res.History; len(r.d.Split.Val) > 0 && (len(h) == 0 || h[len(h)-1].Step != r.step) {
		if _, _, err := r.validate(); err != nil {
			failed(err)
			return
		}
	}
	st, err := snapshot(r.m, r.opt, r.d, r.step, r.stepsPerEpoch, lr, r.res, r.o.Manifest)
	if err == nil {
		st.WorldSize, st.Generation = r.world, r.o.Generation
	}
	if err == nil {
		err = r.o.Save(r.ctx, st)
	}
	if err != nil {
		failed(err)
	}
}

// finish ends the run: on the lead rank, the final validation report with
// the temperature fitted on it, the test report at that temperature, and
// the final checkpoint, which carries both.
func (r *run) finish() (*Result, error) {
	lastLR := optim.LinearSchedule(r.h.LR, max(0, r.step-1), r.warmup, r.total)
	if !r.lead {
		return r.res, nil
	}
	if len(r.d.Split.Val) > 0 {
		if err := r.calibrate(); err != nil {
			return nil, err
		}
	}
	if len(r.d.Split.Test) > 0 {
		var err error
		if r.res.Test, _, err = Evaluate(r.ctx, r.m, r.d, r.d.Split.Test, r.h.EvalBatch, r.res.Temperature); err != nil {
			return nil, err
		}
	}
	r.checkpoint(lastLR)
	return r.res, nil
}

// calibrate evaluates on validation, fits the temperature there when asked
// (Hyper.Calibrate), and sets the final validation report.
func (r *run) calibrate() error {
	rep, logits, err := r.validate()
	if err != nil {
		return err
	}
	if r.h.Calibrate {
		labels := labelsOf(r.d, r.d.Split.Val)
		t, err := metrics.FitTemperature(logits, labels)
		if err != nil {
			return fmt.Errorf("temperature scaling: %w", err)
		}
		r.res.Temperature = t
		if rep, err = evaluateLogits(logits, labels, t); err != nil {
			return err
		}
	}
	r.res.Val = rep
	if r.o.Progress != nil {
		r.o.Progress(Progress{Step: r.step, Steps: r.total, Epoch: r.h.Epochs - 1, Eval: &rep})
	}
	return nil
}
