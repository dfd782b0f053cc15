package chart

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/loraft/loraft/internal/atomicfile"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// CurvesFunc reads a run's loss curve (one value per step) and its
// evaluation curve of metric; both empty for a run without a checkpoint.
type CurvesFunc func(ctx context.Context, run, metric string) (loss, eval []Point, err error)

// FromSweep gathers what `loraft plot` draws: every trial's final metrics
// from the coordinators' record of sw, and its curves from curves.
func FromSweep(ctx context.Context, sw *pb.Sweep, curves CurvesFunc) (*Report, error) {
	rep := &Report{Sweep: sw.GetName(), Metric: sw.GetMetric()}
	for _, t := range sw.GetTrials() {
		ct := Trial{Name: t.GetName(), Rank: int(t.GetRank()), Alpha: t.GetAlpha(), State: strings.TrimPrefix(t.GetState().String(), "TRIAL_STATE_")}
		if t.GetHasMetric() {
			v := t.GetBestMetric()
			ct.Metric = &v
		}
		if r := t.GetResult(); r != nil {
			acc := r.GetValAccuracy()
			ct.Accuracy, ct.WallMS = &acc, r.GetWallMs()
			if t.GetRunningMs() > 0 {
				ct.WallMS = t.GetRunningMs() // every attempt, not only the last
			}
		}
		var err error
		if ct.Loss, ct.Eval, err = curves(ctx, t.GetName(), sw.GetMetric()); err != nil {
			return nil, fmt.Errorf("run %s: %w", t.GetName(), err)
		}
		rep.Trials = append(rep.Trials, ct)
	}
	return rep, nil
}

// WriteReport writes rep as JSON to path (atomically), for ReadReport.
func WriteReport(path string, rep *Report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("sweep report: %w", err)
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o644)
}
