package serve

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/loraft/loraft/checkpoint"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/metrics"
)

// Source names the adapter that should answer now and writes it out.
type Source interface {
	// Best returns the id of the adapter to serve ("<run>@<step>").
	Best(ctx context.Context) (string, error)
	// Export writes adapter id as an adapter directory into dir.
	Export(ctx context.Context, id, dir string) error
}

// Opener loads an exported adapter directory.
type Opener func(dir, id string) (*Model, error)

// Follow keeps s on src's best adapter: it checks every interval and, when
// the best changed, exports and loads the new one and swaps it in (requests
// in flight finish on the old one). It returns when ctx ends; a failed
// check or load is logged and the current model keeps answering.
func Follow(ctx context.Context, s *Service, src Source, open Opener, work string, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := FollowOnce(ctx, s, src, open, work); err != nil && ctx.Err() == nil {
			slog.Warn("checking for a better adapter", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// FollowOnce swaps in src's best adapter if it is not the one serving.
func FollowOnce(ctx context.Context, s *Service, src Source, open Opener, work string) error {
	id, err := src.Best(ctx)
	if err != nil {
		return err
	}
	if m := s.Model(); m != nil && m.Name == id {
		return nil
	}
	if err := os.MkdirAll(work, 0o700); err != nil {
		return fmt.Errorf("adapter work dir: %w", err)
	}
	dir, err := os.MkdirTemp(work, "adapter-")
	if err != nil {
		return fmt.Errorf("adapter work dir: %w", err)
	}
	// The model is in memory once loaded: its directory is not needed after.
	defer os.RemoveAll(dir)
	if err := src.Export(ctx, id, filepath.Join(dir, "adapter")); err != nil {
		return fmt.Errorf("exporting adapter %s: %w", id, err)
	}
	m, err := open(filepath.Join(dir, "adapter"), id)
	if err != nil {
		return err
	}
	prev := "none"
	if p := s.Model(); p != nil {
		prev = p.Name
	}
	s.SetModel(m)
	slog.Info("serving a new adapter", "adapter", id, "previous", prev)
	return nil
}

// Coordinators is what SweepSource asks the coordinator group
// (coordinator.Client).
type Coordinators interface {
	Sweep(ctx context.Context, name string) (*pb.SweepStatus, error)
	BestTrial(ctx context.Context, sweep string) (*pb.Trial, error)
}

// SweepSource is a sweep's best trial, as the coordinators rank it, and its
// best committed checkpoint in the store by the sweep's metric.
type SweepSource struct {
	Coordinators Coordinators
	Store        checkpoint.Store
	Sweep        string

	best *checkpoint.Checkpoint
}

// Best implements Source.
func (s *SweepSource) Best(ctx context.Context) (string, error) {
	st, err := s.Coordinators.Sweep(ctx, s.Sweep)
	if err != nil {
		return "", fmt.Errorf("sweep %s: %w", s.Sweep, err)
	}
	t, err := s.Coordinators.BestTrial(ctx, s.Sweep)
	if err != nil {
		return "", fmt.Errorf("best trial of sweep %s: %w", s.Sweep, err)
	}
	metric := st.GetSweep().GetMetric()
	if metric == "" {
		metric = metrics.DefaultSelection
	}
	warn := func(err error) { slog.Warn("skipping a checkpoint", "trial", t.GetName(), "err", err) }
	ck, err := checkpoint.Best(ctx, s.Store, []string{t.GetName()}, metric, warn)
	if err != nil {
		return "", fmt.Errorf("best checkpoint of trial %s: %w", t.GetName(), err)
	}
	s.best = ck
	return fmt.Sprintf("%s@%d", ck.Run, ck.Step), nil
}

// Export implements Source for the checkpoint Best last named.
func (s *SweepSource) Export(ctx context.Context, id, dir string) error {
	ck := s.best
	if ck == nil || fmt.Sprintf("%s@%d", ck.Run, ck.Step) != id {
		return fmt.Errorf("adapter %s is not the best this source last found", id)
	}
	files, err := checkpoint.Load(ctx, s.Store, *ck)
	if err != nil {
		return err
	}
	return trainer.WriteAdapterFromCheckpoint(files, ck.Run, ck.Step, dir)
}
