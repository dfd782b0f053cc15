package checkpoint

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Retention says which checkpoints of a run to keep.
type Retention struct {
	// KeepLatest keeps the newest K committed checkpoints (0: none by recency).
	KeepLatest int
	// KeepBest keeps the B checkpoints with the highest Metric (0: none by metric).
	KeepBest int
	Metric   string
	// Grace protects uncommitted objects (no manifest) younger than this: an
	// upload in progress must not be collected.
	Grace time.Duration
}

// Retain deletes the checkpoints of run that r does not keep, and orphaned
// objects (in a checkpoint folder without a manifest) older than r.Grace.
// It never deletes the newest committed checkpoint. It returns the deleted keys.
func Retain(ctx context.Context, s Store, run string, r Retention, now time.Time) ([]string, error) {
	cks, err := List(ctx, s, run, nil)
	if err != nil {
		return nil, err
	}
	keep := map[int]bool{}
	if len(cks) > 0 {
		keep[cks[len(cks)-1].Step] = true
	}
	for i := len(cks) - 1; i >= 0 && i >= len(cks)-r.KeepLatest; i-- {
		keep[cks[i].Step] = true
	}
	if r.KeepBest > 0 {
		scored := slices.Clone(cks)
		scored = slices.DeleteFunc(scored, func(c Checkpoint) bool { _, ok := c.Manifest.Metrics[r.Metric]; return !ok })
		sort.SliceStable(scored, func(i, j int) bool {
			return scored[i].Manifest.Metrics[r.Metric] > scored[j].Manifest.Metrics[r.Metric]
		})
		for i := 0; i < r.KeepBest && i < len(scored); i++ {
			keep[scored[i].Step] = true
		}
	}
	committed := map[int]bool{}
	for _, c := range cks {
		committed[c.Step] = true
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
		if !committed[step] && now.Sub(o.Modified) < r.Grace {
			continue // maybe an upload in progress
		}
		if err := s.Delete(ctx, o.Key); err != nil {
			return deleted, fmt.Errorf("deleting %s: %w", o.Key, err)
		}
		deleted = append(deleted, o.Key)
	}
	return deleted, nil
}
