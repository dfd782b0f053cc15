package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	"github.com/loraft/loraft/internal/localcluster"
	"github.com/loraft/loraft/internal/proc"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// TestLocalResumesAfterKill: SIGKILL `loraft local` mid-sweep (its trainer
// processes die with it) and start it again on the same state directory:
// the sweep continues from its committed checkpoints instead of starting
// over, and ends with the best adapter written.
func TestLocalResumesAfterKill(t *testing.T) {
	dir := t.TempDir()
	spec := filepath.Join(dir, "spec.yaml")
	if err := os.WriteFile(spec, []byte(`name: local
space:
  rank: [4, 8]
  alpha: [16]
  learning_rate: [2.0e-3]
train:
  config: tiny
  epochs: 6
  batch_size: 32
  max_len: 32
  checkpoint_every: 5
`), 0o644); err != nil {
		t.Fatal(err)
	}
	state, out := filepath.Join(dir, "state"), filepath.Join(dir, "best")
	args := []string{"local", "--spec", spec, "--data", "../../experiments/data/demo.csv", "--trainers", "1", "--state-dir", state, "--out", out}
	// Each run logs to a file of its own.
	start := func(name string) *proc.Proc {
		p := &proc.Proc{Name: name, Bin: testBinary(t), Args: args, Env: []string{"LORAFT_CACHE=" + filepath.Join(dir, "cache")},
			Log: filepath.Join(dir, name+".log")}
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Kill() })
		return p
	}
	first := start("first")

	// Watch the local cluster through its coordinators until the first
	// trial has a committed checkpoint, then kill the whole thing.
	var cl *coordinator.Client
	coordinatortest.Eventually(t, 3*time.Minute, func() error {
		var ports localcluster.Ports
		b, err := os.ReadFile(filepath.Join(state, "ports.json"))
		if err == nil {
			err = json.Unmarshal(b, &ports)
		}
		if err != nil {
			return fmt.Errorf("no ports file yet (%v); output:\n%s", err, first.Tail(50))
		}
		cl, err = coordinator.NewClient(ports.API)
		return err
	})
	defer cl.Close()
	var before *pb.Trial
	coordinatortest.Eventually(t, 3*time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := cl.ConsistentState(ctx)
		if err != nil {
			return fmt.Errorf("reading the state: %v; output:\n%s", err, first.Tail(50))
		}
		if tr := trialOf(st, "local-t000"); tr.GetState() == pb.TrialState_TRIAL_STATE_RUNNING && tr.GetCheckpointStep() > 0 {
			before = tr
			return nil
		}
		return fmt.Errorf("no committed checkpoint yet; output:\n%s", first.Tail(50))
	})
	if err := first.Kill(); err != nil {
		t.Fatal(err)
	}

	second := start("second")
	select {
	case <-second.Done():
		if err := second.ExitErr(); err != nil {
			t.Fatalf("second loraft local: %v\n%s", err, second.Tail(50))
		}
	case <-time.After(5 * time.Minute):
		t.Fatalf("second loraft local did not finish in 5 minutes:\n%s", second.Tail(50))
	}
	secondOut, err := os.ReadFile(second.Log)
	if err != nil {
		t.Fatal(err)
	}
	logs, _ := os.ReadFile(filepath.Join(state, "logs", "local-t1.log"))
	resumed := fmt.Sprintf("resume: run local-t000 from step %d", before.GetCheckpointStep())
	if !strings.Contains(string(logs), resumed) {
		t.Errorf("the trainer's log does not say %q:\n%s", resumed, logs)
	}
	if strings.Count(string(logs), "resume: run local-t000 has no checkpoint") > 1 {
		t.Errorf("local-t000 started over from step 0 after the restart:\n%s", logs)
	}
	for _, want := range []string{"sweep local finished", "best: local-t00", "predictions"} {
		if !strings.Contains(string(secondOut), want) {
			t.Errorf("second run's output lacks %q:\n%s", want, secondOut)
		}
	}
	for _, f := range []string{"adapter_config.json", "adapter_model.safetensors", "README.md"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
}
