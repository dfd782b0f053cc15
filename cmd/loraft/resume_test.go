package main

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator/coordinatortest"
	"github.com/loraft/loraft/internal/proc"
)

// TestResumeAfterSIGKILL kills a real `loraft train` process with SIGKILL
// after a randomly chosen checkpoint, resumes it with --resume, and checks
// that the final adapter is byte-identical to an uninterrupted run's.
func TestResumeAfterSIGKILL(t *testing.T) {
	tmp := t.TempDir()
	common := []string{"train", "--data", "../../experiments/data/demo.csv", "--no-cache", "--config", "tiny",
		"--epochs", "3", "--batch-size", "32", "--max-len", "32", "--lr", "2e-3", "--checkpoint-every", "3",
		"--keep-latest", "2", "--run", "r"}
	// 224 training rows / 32 = 7 steps per epoch, 21 steps, checkpoints at 3, 6, …, 18 and 21.
	want := filepath.Join(tmp, "uninterrupted")
	if out, err := run(t, append(common, "--store", filepath.Join(tmp, "storeA"), "--out", want)...); err != nil {
		t.Fatalf("uninterrupted run: %v\n%s", err, out)
	}

	killAfter := 3 * (2 + rand.IntN(4)) // a checkpoint step in 6..15: one before it to fall back to
	store := filepath.Join(tmp, "storeB")
	got := filepath.Join(tmp, "resumed")
	train := &proc.Proc{Name: "train", Bin: testBinary(t), Args: append(common, "--store", store, "--out", got), Log: filepath.Join(tmp, "train.log")}
	if err := train.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = train.Kill() })
	manifest := filepath.Join(store, "runs", "r", "ckpt", fmt.Sprintf("%012d", killAfter), "MANIFEST.json")
	coordinatortest.Eventually(t, 3*time.Minute, func() error {
		if _, err := os.Stat(manifest); err != nil {
			return fmt.Errorf("no checkpoint at step %d yet; its log:\n%s", killAfter, train.Tail(30))
		}
		return nil
	})
	if err := train.Kill(); err != nil {
		t.Fatal(err)
	}
	var exit *exec.ExitError
	if err := train.ExitErr(); !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("train was not killed by SIGKILL (it may have finished first): %v", err)
	}
	if _, err := os.Stat(filepath.Join(got, "adapter_model.safetensors")); err == nil {
		t.Fatal("the killed run wrote its final adapter")
	}

	// Flip a byte in a tensor object of the newest checkpoint: resume must
	// report it by name and fall back to the one before.
	steps, _ := filepath.Glob(filepath.Join(store, "runs", "r", "ckpt", "*", "MANIFEST.json"))
	sort.Strings(steps)
	if len(steps) < 2 {
		t.Fatalf("want at least two checkpoints before the kill, have %v", steps)
	}
	newest := filepath.Join(filepath.Dir(steps[len(steps)-1]), "adapter.safetensors")
	data, err := os.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-3] ^= 0x40
	if err := os.WriteFile(newest, data, 0o644); err != nil {
		t.Fatal(err)
	}
	previous := filepath.Base(filepath.Dir(steps[len(steps)-2]))

	out, err := run(t, append(common, "--store", store, "--out", got, "--resume")...)
	if err != nil {
		t.Fatalf("resumed run: %v\n%s", err, out)
	}
	rel := strings.TrimPrefix(newest, store+string(filepath.Separator))
	if !strings.Contains(out, "skipping checkpoint") || !strings.Contains(out, rel) || !strings.Contains(out, "runs/r/ckpt/"+previous+"/") {
		t.Fatalf("resume output does not report the corrupt %s and the fallback to %s:\n%s", rel, previous, out)
	}
	a, _ := os.ReadFile(filepath.Join(want, "adapter_model.safetensors"))
	b, _ := os.ReadFile(filepath.Join(got, "adapter_model.safetensors"))
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatalf("killed after step %d and resumed: adapter differs from the uninterrupted run (%d vs %d bytes)", killAfter, len(b), len(a))
	}
	t.Logf("killed after the step-%d checkpoint; resumed adapter is byte-identical", killAfter)
	if ls, err := run(t, "adapter", "ls", "--store", store); err != nil || !strings.Contains(ls, "r ") {
		t.Fatalf("adapter ls: %v\n%s", err, ls)
	}

	// The run's final checkpoint, pulled, predicts exactly what the trainer's own output does.
	latest := filepath.Join(tmp, "latest")
	if out, err := run(t, "adapter", "pull", "--store", store, "--run", "r", "--out", latest); err != nil {
		t.Fatalf("adapter pull --run: %v\n%s", err, out)
	}
	texts := []string{"--text", "i keep worrying about everything", "--text", "great day at the beach", "--text", "no reason to get up anymore"}
	fromTrain, err := run(t, append([]string{"predict", "--json", "--adapter", got}, texts...)...)
	if err != nil {
		t.Fatal(err)
	}
	fromPull, err := run(t, append([]string{"predict", "--json", "--adapter", latest}, texts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if fromTrain != fromPull || !strings.Contains(fromTrain, "probabilities") {
		t.Fatalf("pulled adapter predicts differently:\n%s\nvs the trainer's\n%s", fromPull, fromTrain)
	}

	// Pull the best checkpoint as a PEFT directory with a model card, and use it.
	pulled := filepath.Join(tmp, "best")
	if out, err := run(t, "adapter", "pull", "--store", store, "--best", "--metric", "macro_f1", "--out", pulled); err != nil {
		t.Fatalf("adapter pull: %v\n%s", err, out)
	}
	card, err := os.ReadFile(filepath.Join(pulled, "README.md"))
	if err != nil || !strings.HasPrefix(string(card), "---\nbase_model: \"random-init bert-tiny (loraft test config, init seed 0)\"\nlibrary_name: peft\n") ||
		!strings.Contains(string(card), "Not a diagnostic tool") || !strings.Contains(string(card), "Confusion matrix") {
		t.Fatalf("model card:\n%s (%v)", card, err)
	}
	for _, f := range []string{"adapter_config.json", "adapter_model.safetensors", "metrics.json", "loraft.json"} {
		if _, err := os.Stat(filepath.Join(pulled, f)); err != nil {
			t.Fatalf("pulled directory lacks %s", f)
		}
	}
	if out, err := run(t, "predict", "--adapter", pulled, "--text", "so anxious i cant breathe"); err != nil || out == "" {
		t.Fatalf("predict on the pulled adapter: %v\n%s", err, out)
	}
}
