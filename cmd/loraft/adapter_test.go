package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/trainer/metrics"
)

// TestAdapterPullSweepFromStore: `adapter pull --best --sweep demo` on a
// store alone compares the sweep's own trials, never those of sweep demo-2
// (whose names also start with "demo-"), and ranks them by the sweep's
// metric unless --metric says otherwise.
func TestAdapterPullSweepFromStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	storeDir := filepath.Join(dir, "store")
	if _, err := run(t, "train", "--data", "../../experiments/data/demo.csv", "--no-cache", "--config", "tiny", "--epochs", "1", "--batch-size", "32",
		"--max-len", "16", "--out", filepath.Join(dir, "src"), "--store", storeDir, "--run", "src"); err != nil {
		t.Fatalf("train: %v", err)
	}
	store, err := checkpoint.Open(ctx, storeDir, checkpoint.S3Options{})
	if err != nil {
		t.Fatal(err)
	}
	src, files, err := checkpoint.LoadLatest(ctx, store, "src", nil)
	if err != nil {
		t.Fatal(err)
	}
	// The same checkpoint as the trials of two sweeps, with made-up scores.
	for run, m := range map[string]map[string]float64{
		"demo-t000":   {metrics.MacroF1: 0.30, metrics.Accuracy: 0.80},
		"demo-t001":   {metrics.MacroF1: 0.50, metrics.Accuracy: 0.60},
		"demo-2-t000": {metrics.MacroF1: 0.90, metrics.Accuracy: 0.90},
	} {
		if _, err := checkpoint.Save(ctx, store, run, src.Step, files, m, src.Manifest.Created); err != nil {
			t.Fatal(err)
		}
	}
	pull := func(extra ...string) string {
		t.Helper()
		args := append([]string{"adapter", "pull", "--best", "--sweep", "demo", "--store", storeDir, "--out", filepath.Join(dir, "out")}, extra...)
		out, err := run(t, args...)
		if err != nil {
			t.Fatalf("loraft %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	// A store without the sweep's record (launched before records existed):
	// the sweep's trial names, by macro-F1.
	if out := pull(); !strings.Contains(out, "pulled run demo-t001 ") {
		t.Fatalf("without a sweep record:\n%s\nwant demo-t001 (demo-2-t000 belongs to sweep demo-2)", out)
	}
	// With the record `sweep launch` writes: its trials, by its metric.
	if err := checkpoint.PutSweep(ctx, store, checkpoint.SweepRecord{Name: "demo", Metric: metrics.Accuracy, Trials: []string{"demo-t000", "demo-t001"}}); err != nil {
		t.Fatal(err)
	}
	if out := pull(); !strings.Contains(out, "pulled run demo-t000 ") || !strings.Contains(out, "accuracy 0.8000") {
		t.Fatalf("with a sweep record ranking by accuracy:\n%s\nwant demo-t000", out)
	}
	if out := pull("--metric", metrics.MacroF1); !strings.Contains(out, "pulled run demo-t001 ") {
		t.Fatalf("with --metric macro_f1:\n%s\nwant demo-t001", out)
	}
	if _, err := run(t, "adapter", "pull", "--best", "--sweep", "demo", "--store", storeDir, "--out", filepath.Join(dir, "out"), "--metric", "loss"); err == nil || !strings.Contains(err.Error(), "--metric") {
		t.Fatalf("--metric loss: %v, want an error naming the flag", err)
	}
}
