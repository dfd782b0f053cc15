package trainer

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/loraft/loraft/trainer/metrics"
	"github.com/loraft/loraft/trainer/model"
	"github.com/sugarme/gotch"
)

// Job is one training run: what to train, on what data, where its
// checkpoints go and where it resumes from. `loraft train`, each rank of
// `loraft trainer` and the trainer agent all run a Job through RunJob.
type Job struct {
	// Run is the run's name in Store (checkpoint.ValidateRun).
	Run string
	// Base, LoRA and Hyper describe a fresh run; a resumed run continues with
	// the ones its checkpoint recorded instead.
	Base  Base
	LoRA  lora.Config
	Hyper Hyper
	// Data is the read, split and tokenized dataset.
	Data *Data
	// Tokenizer records how Data was tokenized (vocab sha256, max length,
	// lower casing); it goes into the manifest, and a resumed run must match it.
	Tokenizer Tokenizer
	// Vocab is the tokenizer's vocab.txt, stored with every checkpoint.
	Vocab []byte
	// Device is where the model lives.
	Device gotch.Device
	// Recompute trades one more forward pass of the encoder per step for
	// far less memory (model.Options.Recompute, --grad-checkpoint); the
	// gradients are the same either way.
	Recompute bool

	// Store receives checkpoints (nil: no checkpoints, and no resuming).
	Store checkpoint.Store
	// CheckpointEvery saves a checkpoint every N steps and at the end (0: only at the end).
	CheckpointEvery int
	// Retention is applied after every committed checkpoint; the zero
	// Retention keeps every checkpoint.
	Retention checkpoint.Retention
	// Checkpoints are written to Store in the background, in order, while
	// training goes on; a failed write is retried with backoff.
	// PendingCheckpoints bounds how many (encoded, in memory) wait at once:
	// beyond it the oldest waiting one is dropped as superseded, never the
	// newest (zero: DefaultPendingCheckpoints; at least 2).
	PendingCheckpoints int
	// PendingBytes bounds the bytes of the waiting checkpoints as
	// PendingCheckpoints bounds their number (zero: DefaultPendingBytes).
	PendingBytes int64
	// SpoolDir, when set, keeps every waiting checkpoint on local disk too,
	// under SpoolDir/<Run>/<step>/, until it is committed, so a trainer
	// restarted while the store is down loses none. At the start of a job
	// of Run, the saving rank (0) discards the spooled checkpoints of other
	// generations (a stale assignment's: never committed) and those at or
	// before ResumeAt (already committed), and writes the others to Store
	// first, in step order; a job alone (World ≤ 1) resumes from the newest
	// of them instead of ResumeAt.
	SpoolDir string
	// Metric is the selection metric (empty: metrics.DefaultSelection): the
	// waiting checkpoint with its best value is never dropped.
	Metric string
	// StoreOutage is how long checkpoint writes may keep failing before the
	// job stops with an error wrapping ErrStoreUnreachable (zero:
	// DefaultStoreOutage). RunJob returns success only once the final
	// checkpoint is committed.
	StoreOutage time.Duration
	// ResumeLatest continues from the newest valid checkpoint of Run.
	ResumeLatest bool
	// ResumeAt > 0 continues from the newest valid checkpoint with step ≤
	// ResumeAt (e.g. the coordinator's committed step): later checkpoints are
	// ignored and corrupt ones fall back to older. It excludes ResumeLatest.
	// With either, a run without such a checkpoint starts at step 0 (Warn says so).
	ResumeAt int

	// Generation is the assignment's generation under the coordinators (0:
	// none), recorded in every checkpoint. A checkpoint of a newer
	// generation than this one is not resumed from: it is not this job's
	// past.
	Generation uint64
	// Rank, World and Reducer place the job in a data-parallel run (World 0
	// or 1: alone); only rank 0 evaluates and saves. See Options.
	Rank, World int
	Reducer     Reducer

	// Authorized, when set, is checked before every step and checkpoint: an
	// error stops training with it (the trainer's lease may have lapsed).
	Authorized func() error
	// Built, when set, is called once the model is built, before training,
	// with the manifest the run trains with (a resumed run's recorded one).
	Built func(m *model.Model, man Manifest)
	// Progress is called after every step and evaluation.
	Progress func(Progress)
	// Saved is called on the saving rank after a checkpoint is committed to
	// Store, with its step and the metrics recorded with it (nil when the
	// step had no validation evaluation); checkpoints are reported in step
	// order, each only once its manifest is stored.
	Saved func(ctx context.Context, step int, metrics map[string]float64)
	// SaveFailed is called after every failed attempt to write a checkpoint
	// (it is retried; training goes on), and when a checkpoint is given up
	// (the error wraps ErrCheckpointDropped).
	//
	// Saved and SaveFailed are called from the job's checkpoint writer
	// goroutine, one at a time, possibly while Progress runs.
	SaveFailed func(step int, err error)
	// SaveTook and LoadTook, when set, are told how long a checkpoint took
	// to commit to Store (its objects and manifest; retention not included)
	// and the checkpoint resumed from took to load and verify, for metrics.
	// SaveTook is called from the checkpoint writer goroutine.
	SaveTook, LoadTook func(step int, took time.Duration)
	// Warn receives notices that do not stop the job, one line each without
	// a trailing newline: checkpoints skipped on resume, where the run
	// resumes, failed retention. Calls never overlap.
	Warn func(msg string)
}

// ErrJob reports a Job that cannot run as given.
var ErrJob = errors.New("invalid training job")

// RunJob builds the job's model, resumes it when asked, trains it, and
// returns the trained model (the caller drops it), the manifest it trained
// with (Temperature and Steps set, ready for SaveAdapter) and the result. On
// error the model is dropped and nil. Callers size libtorch's thread pool
// first (libtorch.SetThreads). Like Train, it locks its goroutine to its OS
// thread while training.
func RunJob(ctx context.Context, j Job) (*model.Model, Manifest, *Result, error) {
	if j.Data == nil || j.Data.Split == nil {
		return nil, Manifest{}, nil, fmt.Errorf("%w: run %s has no data", ErrJob, j.Run)
	}
	if j.ResumeLatest && j.ResumeAt > 0 {
		return nil, Manifest{}, nil, fmt.Errorf("%w: ResumeLatest and ResumeAt %d both set", ErrJob, j.ResumeAt)
	}
	if (j.ResumeLatest || j.ResumeAt > 0) && j.Store == nil {
		return nil, Manifest{}, nil, fmt.Errorf("%w: resuming run %s needs a store", ErrJob, j.Run)
	}
	if j.Store != nil {
		if err := checkpoint.ValidateRun(j.Run); err != nil {
			return nil, Manifest{}, nil, fmt.Errorf("%w: %w", ErrJob, err)
		}
	}
	var warnMu sync.Mutex // the checkpoint writer warns too
	warn := func(format string, args ...any) {
		if j.Warn != nil {
			warnMu.Lock()
			defer warnMu.Unlock()
			j.Warn(fmt.Sprintf(format, args...))
		}
	}
	d, run := j.Data, j.Run
	man := Manifest{Base: j.Base, LoRA: j.LoRA, Hyper: j.Hyper, Tokenizer: j.Tokenizer,
		Split: d.Split.Spec, SplitID: d.Split.Spec.ID()}
	resume, err := j.resumeState(ctx, warn)
	if err != nil {
		return nil, Manifest{}, nil, err
	}
	committed := 0 // the step resumed from the store
	if resume != nil {
		committed = resume.Step
	}
	var (
		sp        *spool
		recovered []*pendingSave
	)
	if j.SpoolDir != "" && j.Store != nil && j.Rank == 0 {
		if sp, recovered, err = j.openSpool(warn); err != nil {
			return nil, Manifest{}, nil, err
		}
		if n := len(recovered); n > 0 && j.World <= 1 && (resume == nil || recovered[n-1].step > resume.Step) {
			newest := recovered[n-1]
			st, _, err := StateFromFiles(newest.files)
			if err != nil {
				return nil, Manifest{}, nil, fmt.Errorf("spooled checkpoint %s step %d: %w", run, newest.step, err)
			}
			warn("resume: run %s from step %d (spooled in %s, not yet in %s)", run, newest.step, sp.stepDir(newest.step), j.Store)
			resume = st
		}
	}
	if resume != nil {
		// The run continues with the settings it started with.
		man = resume.Manifest
		if man.Tokenizer.VocabSHA256 != j.Tokenizer.VocabSHA256 || man.Tokenizer.MaxLen != j.Tokenizer.MaxLen || man.SplitID != d.Split.Spec.ID() {
			return nil, Manifest{}, nil, fmt.Errorf("resume: run %s was trained with vocab %.12s, max length %d and split %s; these flags give %.12s, %d and %s",
				run, man.Tokenizer.VocabSHA256, man.Tokenizer.MaxLen, man.SplitID, j.Tokenizer.VocabSHA256, j.Tokenizer.MaxLen, d.Split.Spec.ID())
		}
		// A sweep's base sits in each trainer's own cache, so the path a
		// checkpoint records (maybe another trainer's, and read from the
		// store) is never opened: this job's copy is, when its sha256 matches.
		if man.Base.Weights != "" {
			if man.Base.WeightsSHA256 == "" || man.Base.WeightsSHA256 != j.Base.WeightsSHA256 {
				return nil, Manifest{}, nil, fmt.Errorf("resume: run %s was trained on base weights of sha256 %.12s; this job's base has %.12s",
					run, man.Base.WeightsSHA256, j.Base.WeightsSHA256)
			}
			man.Base.Weights = j.Base.Weights
		}
	}
	compute, err := ParseCompute(man.Base.Compute)
	if err != nil {
		return nil, Manifest{}, nil, err
	}
	w, clsW, clsB, err := BaseWeights(man.Base, "")
	if err != nil {
		return nil, Manifest{}, nil, err
	}
	// The file's bytes are garbage once decoded: return them before the
	// device copy grows, and let New free each host tensor as it uploads it.
	debug.FreeOSMemory()
	m, err := model.New(man.Base.Config, w, clsW, clsB, model.Options{Quant: man.Base.Quant, Compute: compute,
		Device: j.Device, LoRA: man.LoRA, Labels: shard.NumLabels, Seed: man.Hyper.Seed, Recompute: j.Recompute, ReleaseHost: true})
	if err != nil {
		return nil, Manifest{}, nil, err
	}
	debug.FreeOSMemory() // what New released last
	if j.Built != nil {
		j.Built(m, man)
	}

	opts := Options{Manifest: man, Resume: resume, CheckpointEvery: j.CheckpointEvery, Progress: j.Progress, Generation: j.Generation, Authorized: j.Authorized,
		Rank: j.Rank, World: j.World, Reducer: j.Reducer}
	trainCtx, stopTraining := context.WithCancelCause(ctx)
	defer stopTraining(nil)
	var sv *saver
	var cbMu sync.Mutex // Saved and SaveFailed calls never overlap
	if j.Store != nil {
		commit := func(ctx context.Context, p *pendingSave) error {
			start := time.Now()
			if _, err := checkpoint.Save(ctx, j.Store, run, p.step, p.files, p.metrics, p.at); err != nil {
				return err
			}
			if j.SaveTook != nil {
				j.SaveTook(p.step, time.Since(start))
			}
			if j.Saved != nil {
				cbMu.Lock()
				j.Saved(ctx, p.step, p.metrics)
				cbMu.Unlock()
			}
			if j.Retention != (checkpoint.Retention{}) {
				// p.step was just reported for the coordinator to commit:
				// retention never prunes it.
				if _, err := checkpoint.RetainCommitted(ctx, j.Store, run, p.step, j.Retention, time.Now()); err != nil {
					warn("warning: checkpoint retention: %v", err)
				}
			}
			return nil
		}
		failed := func(step int, err error) {
			if j.SaveFailed != nil {
				cbMu.Lock()
				defer cbMu.Unlock()
				j.SaveFailed(step, err)
			}
		}
		metric := j.Metric
		if metric == "" {
			metric = metrics.DefaultSelection
		}
		sv = newSaver(ctx, saverConfig{store: j.Store.String(), max: j.PendingCheckpoints, maxBytes: j.PendingBytes, outage: j.StoreOutage,
			committed: committed, metric: metric, spool: sp, generation: j.Generation, run: run,
			commit: commit, failed: failed, stop: stopTraining, warn: func(msg string) { warn("%s", msg) }})
		if sp != nil {
			defer sp.close()
		}
		// What an earlier process of this assignment left unwritten goes first.
		for _, p := range recovered {
			if err := sv.add(p); err != nil {
				sv.abort()
				m.Drop()
				return nil, Manifest{}, nil, err
			}
		}
		opts.Save = func(_ context.Context, st *State) error {
			files, err := st.Files(j.Vocab)
			if err != nil {
				return err
			}
			return sv.add(&pendingSave{step: st.Step, files: files, metrics: CheckpointMetrics(st), at: time.Now()})
		}
		opts.SaveFailed = failed
	}
	res, err := Train(trainCtx, m, d, man.Hyper, opts)
	if err == nil && sv != nil {
		// Success means the final checkpoint is in the store.
		err = sv.wait()
	}
	if err != nil {
		if sv != nil {
			sv.abort()
			if serr := sv.stopped(); serr != nil {
				err = serr // training stopped because the store is gone
			}
		}
		m.Drop()
		return nil, Manifest{}, nil, err
	}
	man.Temperature, man.Steps = res.Temperature, res.Steps
	return m, man, res, nil
}

// resumeState loads the checkpoint the job resumes from: nil when it starts
// at step 0.
func (j Job) resumeState(ctx context.Context, warn func(string, ...any)) (*State, error) {
	if !j.ResumeLatest && j.ResumeAt <= 0 {
		return nil, nil
	}
	skip := func(err error) { warn("warning: skipping checkpoint: %v", err) }
	var (
		ck    *checkpoint.Checkpoint
		files map[string][]byte
		err   error
	)
	if err := checkpoint.ValidateRun(j.Run); err != nil {
		return nil, err
	}
	start := time.Now()
	outage := j.StoreOutage
	if outage <= 0 {
		outage = DefaultStoreOutage
	}
	// The store may be down for a while (a restart, a partition): wait for
	// it with backoff, as checkpoint saves do, rather than fail the trial or
	// bounce it between trainers; give up after StoreOutage.
	for backoff := 500 * time.Millisecond; ; backoff = min(2*backoff, 10*time.Second) {
		if j.ResumeAt > 0 {
			ck, files, err = checkpoint.LoadAtOrBefore(ctx, j.Store, j.Run, j.ResumeAt, skip)
		} else {
			ck, files, err = checkpoint.LoadLatest(ctx, j.Store, j.Run, skip)
		}
		if err == nil || errors.Is(err, checkpoint.ErrNoCheckpoint) || ctx.Err() != nil {
			break
		}
		if waited := time.Since(start); waited+backoff > outage {
			return nil, fmt.Errorf("%w: resuming run %s: the store has not answered for %s: %w", ErrStoreUnreachable, j.Run, waited.Round(time.Second), err)
		}
		warn("warning: resume: reading run %s's checkpoints from %s: %v (retrying in %s)", j.Run, j.Store, err, backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
	}
	switch {
	case errors.Is(err, checkpoint.ErrNoCheckpoint):
		if j.ResumeAt > 0 {
			warn("resume: run %s has no checkpoint at or before step %d in %s; starting at step 0", j.Run, j.ResumeAt, j.Store)
		} else {
			warn("resume: run %s has no checkpoint in %s yet; starting at step 0", j.Run, j.Store)
		}
		return nil, nil
	case err != nil:
		return nil, err
	}
	st, _, err := StateFromFiles(files)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s step %d: %w", j.Run, ck.Step, err)
	}
	if j.LoadTook != nil {
		j.LoadTook(ck.Step, time.Since(start))
	}
	if j.Generation > 0 && st.Generation > j.Generation {
		return nil, fmt.Errorf("%w: checkpoint %s step %d was written under generation %d, newer than this job's %d: a newer assignment owns run %s",
			ErrStaleGeneration, j.Run, ck.Step, st.Generation, j.Generation, j.Run)
	}
	warn("resume: run %s from step %d (checkpoint %s)", j.Run, ck.Step, checkpoint.Prefix(j.Run, ck.Step))
	return st, nil
}

// openSpool opens the job's spool and sorts out what an earlier process
// left there: entries of other generations are a stale assignment's and are
// removed (never committed); entries at or before ResumeAt are committed
// already and are removed; the rest, in step order, are returned to be
// written first.
func (j Job) openSpool(warn func(string, ...any)) (*spool, []*pendingSave, error) {
	sp, err := openSpool(j.SpoolDir, j.Run)
	if err != nil {
		return nil, nil, err
	}
	var out []*pendingSave
	for _, e := range sp.entries(func(err error) { warn("warning: %v", err) }) {
		switch {
		case e.Generation != j.Generation || e.Run != j.Run:
			warn("discarding spooled checkpoint %s step %d of generation %d: this job's generation is %d, so it is a stale assignment's and is never committed",
				e.Run, e.Step, e.Generation, j.Generation)
		case e.Step <= j.ResumeAt:
			// Committed already: the coordinator's step is past it.
		default:
			files, meta, err := sp.load(e.Step)
			if err == nil {
				out = append(out, &pendingSave{step: e.Step, files: files, metrics: meta.Metrics, at: meta.At, spooled: true})
				continue
			}
			warn("warning: %v", err)
		}
		if err := sp.remove(e.Step); err != nil {
			warn("warning: %v", err)
		}
	}
	if len(out) > 0 {
		warn("checkpoint spool %s: %d checkpoints of run %s (generation %d) left unwritten by an earlier process: writing them first", sp.dir, len(out), j.Run, j.Generation)
	}
	return sp, out, nil
}

// ErrStaleGeneration reports a job whose assignment is older than the one
// that wrote the run's checkpoint.
var ErrStaleGeneration = errors.New("stale generation")

// CheckpointMetrics are the validation scores recorded in a checkpoint's
// manifest for best-checkpoint selection: the final report, else the
// evaluation at the state's step; nil when the step had none.
func CheckpointMetrics(st *State) map[string]float64 {
	rep := st.Val
	if rep.N == 0 && len(st.History) > 0 && st.History[len(st.History)-1].Step == st.Step {
		rep = st.History[len(st.History)-1].Report
	}
	if rep.N == 0 {
		return nil
	}
	return rep.Scores()
}
