package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Retention says which checkpoints of a run to keep.
type Retention struct {
	// KeepLatest keeps the newest K verified checkpoints (0: none by recency).
	KeepLatest int
	// KeepBest keeps the B verified checkpoints with the highest Metric (0: none by metric).
	KeepBest int
	Metric   string
	// Grace protects uncommitted objects (no manifest) younger than this: an
	// upload in progress must not be collected.
	Grace time.Duration
}

// Retain is RetainCommitted without a committed step to protect: for a
// run no coordinator tracks (loraft train).
func Retain(ctx context.Context, s Store, run string, r Retention, now time.Time) ([]string, error) {
	return RetainCommitted(ctx, s, run, 0, r, now)
}

// RetainCommitted deletes the checkpoints of run that r does not keep, and
// orphaned objects (in a checkpoint folder without a manifest) older than
// r.Grace. It returns the deleted keys.
//
// It never deletes the checkpoint at step committed (the step the
// coordinator's FSM has committed, which a resumed run restarts from; ≤ 0:
// none), nor the newest checkpoint that verifies. Only checkpoints whose
// objects verify against their manifest (Verify) count toward KeepLatest
// and KeepBest: a newer checkpoint that parses but is damaged must not push
// out the sound one a resume needs. Damaged checkpoints outside the kept
// set are deleted like any other.
func RetainCommitted(ctx context.Context, s Store, run string, committed int, r Retention, now time.Time) ([]string, error) {
	cks, err := List(ctx, s, run, nil)
	if err != nil {
		return nil, err
	}
	keep := map[int]bool{}
	if committed > 0 {
		keep[committed] = true
	}
	// Verify lazily, newest first, and only as many as the rules need: a
	// checkpoint that is deleted anyway need not be read.
	verified := map[int]error{}
	sound := func(c Checkpoint) (bool, error) {
		err, ok := verified[c.Step]
		if !ok {
			err = Verify(ctx, s, c)
			verified[c.Step] = err
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			return false, fmt.Errorf("retention of %s: verifying step %d: %w", run, c.Step, err)
		}
		return err == nil, nil
	}
	latest := max(r.KeepLatest, 1) // the newest sound checkpoint is always kept
	for i := len(cks) - 1; i >= 0 && latest > 0; i-- {
		ok, err := sound(cks[i])
		if err != nil {
			return nil, err
		}
		if ok {
			keep[cks[i].Step] = true
			latest--
		}
	}
	if r.KeepBest > 0 {
		scored := slices.Clone(cks)
		scored = slices.DeleteFunc(scored, func(c Checkpoint) bool { _, ok := c.Manifest.Metrics[r.Metric]; return !ok })
		// Highest metric first; among equals the later step.
		sort.SliceStable(scored, func(i, j int) bool {
			a, b := scored[i].Manifest.Metrics[r.Metric], scored[j].Manifest.Metrics[r.Metric]
			return a > b || (a == b && scored[i].Step > scored[j].Step)
		})
		best := r.KeepBest
		for i := 0; i < len(scored) && best > 0; i++ {
			ok, err := sound(scored[i])
			if err != nil {
				return nil, err
			}
			if ok {
				keep[scored[i].Step] = true
				best--
			}
		}
	}
	listed := map[int]bool{}
	for _, c := range cks {
		listed[c.Step] = true
	}
	objs, err := s.List(ctx, RunPrefix(run)+"ckpt/")
	if err != nil {
		return nil, fmt.Errorf("listing checkpoints of %s: %w", run, err)
	}
	// Delete manifests first so a half-deleted checkpoint is never listed.
	sort.SliceStable(objs, func(i, j int) bool {
		return strings.HasSuffix(objs[i].Key, "/"+ManifestName) && !strings.HasSuffix(objs[j].Key, "/"+ManifestName)
	})
	var deleted []string
	for _, o := range objs {
		step, ok := stepOf(run, o.Key)
		if !ok || keep[step] {
			continue
		}
		if !listed[step] && now.Sub(o.Modified) < r.Grace {
			continue // maybe an upload in progress
		}
		if err := s.Delete(ctx, o.Key); err != nil {
			return deleted, fmt.Errorf("deleting %s: %w", o.Key, err)
		}
		deleted = append(deleted, o.Key)
	}
	return deleted, nil
}
