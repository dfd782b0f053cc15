//go:build chaos

package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/loraft/loraft/internal/faultproxy"

	"github.com/loraft/loraft/internal/proc"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// scenarios are the faults the suite injects, each on a fresh cluster.
func scenarios() []scenario {
	return []scenario{
		{name: "leader-cut-off-20s", netns: true, inject: func(ctx context.Context, r *runCtx) error {
			// The leader's host loses its link: its followers, trainers and
			// clients get no answer (packets dropped, connections open).
			co, err := r.c.Leader(ctx)
			if err != nil {
				return err
			}
			i := slices.Index(r.c.Coordinators, co)
			if err := r.net.cut(i, true); err != nil {
				return err
			}
			werr := wait(ctx, 20*time.Second)
			if err := r.net.cut(i, false); err != nil {
				return err
			}
			return werr
		}},
		{name: "trainer-cut-off-from-coordinators", proxied: true, inject: func(ctx context.Context, r *runCtx) error {
			// t1 still reaches the store and its peers, not the coordinators,
			// for three leases: it must stop its job on its own (self-fencing)
			// before its trial moves, and commit nothing after.
			for _, p := range r.coordProxies["t1"] {
				p.Set(faultproxy.Faults{BlackHole: true})
			}
			werr := wait(ctx, 3*lease)
			for _, p := range r.coordProxies["t1"] {
				p.Set(faultproxy.Faults{})
			}
			return werr
		}},
		{name: "trainer-ring-cut-off-20s", proxied: true, ring: true, inject: func(ctx context.Context, r *runCtx) error {
			// The reverse: both trainers of a trial reach the coordinators
			// and the store, not each other. The all-reduce times out
			// (--step-timeout), both ranks stop, and the trial resumes from
			// its committed checkpoint once the ring is whole again.
			for _, p := range r.ringProxies {
				p.Set(faultproxy.Faults{BlackHole: true})
			}
			werr := wait(ctx, 20*time.Second)
			for _, p := range r.ringProxies {
				p.Set(faultproxy.Faults{})
			}
			return werr
		}, check: func(st *pb.State) error {
			for _, tr := range sweepOf(st, "chaos").GetTrials() {
				if tr.GetAttempts() > 1 {
					return nil
				}
			}
			return errors.New("every trial ran once: the cut ring stopped no rank")
		}},
		{name: "first-coordinator-paused-30s", inject: func(ctx context.Context, r *runCtx) error {
			// First in every trainer's and client's list (a follower or the
			// leader, whichever it is now).
			return pauseFor(ctx, r.c.Coordinators[0].Proc, 30*time.Second)
		}},
		{name: "leader-paused-twice-the-lease", inject: func(ctx context.Context, r *runCtx) error {
			co, err := r.c.Leader(ctx)
			if err != nil {
				return err
			}
			// Resumed, it wakes a zombie: deposed, still believing it leads.
			return pauseFor(ctx, co.Proc, 2*lease)
		}},
		{name: "trainer-paused-past-its-lease", inject: func(ctx context.Context, r *runCtx) error {
			// A paused trainer's trial moves on; resumed, it must commit nothing.
			return pauseFor(ctx, r.c.Trainers[0].Proc, 3*lease)
		}},
		{name: "minio-paused-30s", inject: func(ctx context.Context, r *runCtx) error {
			return pauseFor(ctx, r.c.MinIO.Proc, 30*time.Second)
		}},
		{name: "minio-down-60s", inject: func(ctx context.Context, r *runCtx) error {
			if err := r.c.MinIO.Proc.Kill(); err != nil {
				return err
			}
			if err := wait(ctx, 60*time.Second); err != nil {
				return err
			}
			return r.c.MinIO.Restart()
		}},
		{name: "coordinator-disk-full-30s", prepare: tmpfsFor("raft-n1"), inject: func(ctx context.Context, r *runCtx) error {
			// n1's raft directory is a small tmpfs: fill it, wait, free it.
			filler := filepath.Join(r.dir, "raft-n1", "filler")
			if err := fill(filler); err != nil {
				return err
			}
			werr := wait(ctx, 30*time.Second)
			if err := os.Remove(filler); err != nil {
				return err
			}
			return werr
		}},
		{name: "latency-200ms-resets-1pct-60s", proxied: true, inject: func(ctx context.Context, r *runCtx) error {
			// Between the trainers and the coordinators and the store.
			r.setFaults(faultproxy.Faults{Latency: 200 * time.Millisecond, ResetRate: 0.01})
			werr := wait(ctx, 60*time.Second)
			r.setFaults(faultproxy.Faults{})
			return werr
		}},
	}
}

// tmpfsFor mounts a 16 MiB tmpfs at dir/sub for the length of the test, so
// that filling it gives a real "no space left on device".
func tmpfsFor(sub string) func(t *testing.T, dir string) {
	return func(t *testing.T, dir string) {
		t.Helper()
		mnt := filepath.Join(dir, sub)
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mnt).CombinedOutput(); err != nil {
			t.Fatalf("mounting a tmpfs at %s (the disk-full scenario needs root): %v\n%s", mnt, err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
				t.Errorf("unmounting %s: %v\n%s", mnt, err, out)
			}
		})
	}
}

// fill writes path until its file system is full.
func fill(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return nil
			}
			return fmt.Errorf("filling %s: %w", path, err)
		}
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
