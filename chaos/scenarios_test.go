//go:build chaos

package chaos

import (
	"context"
	"fmt"
	"time"

	"github.com/loraft/loraft/internal/proc"
)

// scenarios are the faults the suite injects, each on a fresh cluster.
func scenarios() []scenario {
	return []scenario{
		{"first-coordinator-paused-30s", func(ctx context.Context, r *runCtx) error {
			// First in every trainer's and client's list (a follower or the
			// leader, whichever it is now).
			return pauseFor(ctx, r.c.Coordinators[0].Proc, 30*time.Second)
		}},
		{"leader-paused-twice-the-lease", func(ctx context.Context, r *runCtx) error {
			co, err := r.c.Leader(ctx)
			if err != nil {
				return err
			}
			// Resumed, it wakes a zombie: deposed, still believing it leads.
			return pauseFor(ctx, co.Proc, 2*lease)
		}},
		{"trainer-paused-past-its-lease", func(ctx context.Context, r *runCtx) error {
			// A paused trainer's trial moves on; resumed, it must commit nothing.
			return pauseFor(ctx, r.c.Trainers[0].Proc, 3*lease)
		}},
		{"minio-paused-30s", func(ctx context.Context, r *runCtx) error {
			return pauseFor(ctx, r.c.MinIO.Proc, 30*time.Second)
		}},
		{"minio-down-60s", func(ctx context.Context, r *runCtx) error {
			if err := r.c.MinIO.Proc.Kill(); err != nil {
				return err
			}
			if err := wait(ctx, 60*time.Second); err != nil {
				return err
			}
			return r.c.MinIO.Restart()
		}},
	}
}

// pauseFor stops p with SIGSTOP for d, then continues it.
func pauseFor(ctx context.Context, p *proc.Proc, d time.Duration) error {
	if err := p.Pause(); err != nil {
		return fmt.Errorf("pausing %s: %w", p.Name, err)
	}
	werr := wait(ctx, d)
	if err := p.Resume(); err != nil {
		return fmt.Errorf("resuming %s: %w", p.Name, err)
	}
	return werr
}

func wait(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
