package trainer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"time"

	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer/model"
	"github.com/loraft/loraft/trainer/optim"
)

// SyntheticData is a dataset of n random statements already tokenized to
// exactly seq ids ([CLS] random ids [SEP]) with random labels, all in the
// train split: the input of speed and memory benchmarks.
func SyntheticData(n, seq int, seed uint64) *Data {
	rng := rand.New(rand.NewPCG(seed, 1))
	ds := &shard.Dataset{Name: "synthetic", Rows: make([]shard.Row, n)}
	tok := &shard.Tokens{MaxLen: seq, IDs: make([][]int32, n), FullLen: make([]int32, n)}
	train := make([]int, n)
	for i := range n {
		ds.Rows[i].Label = shard.Label(rng.IntN(shard.NumLabels))
		ids := make([]int32, seq)
		ids[0], ids[seq-1] = 101, 102
		for j := 1; j < seq-1; j++ {
			ids[j] = int32(1000 + rng.IntN(29000))
		}
		tok.IDs[i], tok.FullLen[i] = ids, int32(seq)
		train[i] = i
	}
	return &Data{DS: ds, Split: &shard.Split{Train: train}, Tokens: tok}
}

// StepTimer runs training steps (forward, backward, clip, AdamW) on
// synthetic batches, for benchmarks. It must stay on one goroutine.
type StepTimer struct {
	m     *model.Model
	d     *Data
	h     Hyper
	opt   *optim.AdamW
	batch int
	step  int
}

// NewStepTimer prepares batch-row steps of m on d.
func NewStepTimer(m *model.Model, d *Data, batch int) (*StepTimer, error) {
	opt, err := optim.NewAdamW(m.Params(), 0)
	if err != nil {
		return nil, err
	}
	h := DefaultHyper()
	h.BatchSize = batch
	return &StepTimer{m: m, d: d, h: h, opt: opt, batch: batch}, nil
}

// Step runs one training step and returns its wall time. The calling
// goroutine must be locked to its OS thread.
func (s *StepTimer) Step(ctx context.Context) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n := len(s.d.Split.Train)
	rows := make([]int, s.batch)
	for i := range rows {
		rows[i] = (s.step*s.batch + i) % n
	}
	start := time.Now()
	if _, err := trainStep(ctx, s.m, s.d, rows, rows, s.h, nil, s.opt, 2e-4, int64(s.step), nil, s.step); err != nil {
		return 0, fmt.Errorf("benchmark step %d: %w", s.step, err)
	}
	s.step++
	return time.Since(start), nil
}

// Close frees the optimizer state.
func (s *StepTimer) Close() { s.opt.Drop() }

// LockThread pins the calling goroutine to its OS thread for gotch and
// returns the unlock function.
func LockThread() func() {
	runtime.LockOSThread()
	return runtime.UnlockOSThread
}
