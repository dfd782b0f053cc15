package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// TestLocalResumesAfterKill: SIGKILL `loraft local` mid-sweep (its trainer
// processes die with it) and start it again on the same state directory:
// the sweep continues from its committed checkpoints instead of starting
// over, and ends with the best adapter written.
func TestLocalResumesAfterKill(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
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
	start := func() (*exec.Cmd, *bytes.Buffer) {
		cmd := exec.Command(self, args...)
		cmd.Env = append(os.Environ(), "LORAFT_TEST_MAIN=1", "LORAFT_CACHE="+filepath.Join(dir, "cache"))
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &buf
	}
	first, firstOut := start()
	t.Cleanup(func() { _ = first.Process.Kill(); _ = first.Wait() })

	// Watch the local cluster through its coordinators until the first
	// trial has a committed checkpoint, then kill the whole thing.
	var ports localPorts
	deadline := time.Now().Add(3 * time.Minute)
	var cl *coordinator.Client
	for cl == nil && time.Now().Before(deadline) {
		if b, err := os.ReadFile(filepath.Join(state, "ports.json")); err == nil && json.Unmarshal(b, &ports) == nil {
			if cl, err = coordinator.NewClient(ports.API); err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
		}
		time.Sleep(50 * time.Millisecond)
	}
	var before *pb.Trial
	for before == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no committed checkpoint in 3 minutes; output:\n%s", firstOut)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := cl.ConsistentState(ctx)
		cancel()
		if err == nil {
			if tr := trialOf(st, "local-t000"); tr.GetState() == pb.TrialState_TRIAL_STATE_RUNNING && tr.GetCheckpointStep() > 0 {
				before = tr
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()

	second, secondOut := start()
	t.Cleanup(func() { _ = second.Process.Kill() })
	done := make(chan error, 1)
	go func() { done <- second.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("second loraft local: %v\n%s", err, secondOut)
		}
	case <-time.After(5 * time.Minute):
		t.Fatalf("second loraft local did not finish in 5 minutes:\n%s", secondOut)
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
		if !strings.Contains(secondOut.String(), want) {
			t.Errorf("second run's output lacks %q:\n%s", want, secondOut)
		}
	}
	for _, f := range []string{"adapter_config.json", "adapter_model.safetensors", "README.md"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
}
