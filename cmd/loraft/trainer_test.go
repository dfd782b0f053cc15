package main

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loraft/loraft/checkpoint/safetensors"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	"github.com/loraft/loraft/internal/loopback"
	"github.com/loraft/loraft/internal/proc"
)

// freePorts reserves n loopback addresses for trainer ranks.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	addrs, err := loopback.Addrs(n)
	if err != nil {
		t.Fatal(err)
	}
	return addrs
}

// noDropoutConfig writes a bert-tiny config.json without dropout, so runs
// with different world sizes see the same arithmetic up to summation order.
func noDropoutConfig(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "config.json")
	cfg := `{"vocab_size":30522,"hidden_size":128,"num_hidden_layers":2,"num_attention_heads":2,"intermediate_size":512,` +
		`"max_position_embeddings":512,"type_vocab_size":2,"layer_norm_eps":1e-12,"hidden_dropout_prob":0,` +
		`"attention_probs_dropout_prob":0,"hidden_act":"gelu","initializer_range":0.02}`
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// startRanks starts world real trainer processes; each one's output goes
// to its log.
func startRanks(t *testing.T, world int, extra func(rank int) []string, common []string) []*proc.Proc {
	t.Helper()
	bin := testBinary(t)
	bin.Env = append(bin.Env, "OMP_NUM_THREADS=1")
	peers := strings.Join(freePorts(t, world), ",")
	logs := t.TempDir()
	var ranks []*proc.Proc
	for r := range world {
		p := &proc.Proc{Name: fmt.Sprintf("rank %d", r), Bin: bin, Log: filepath.Join(logs, fmt.Sprintf("rank-%d.log", r)),
			Args: append(append([]string{"trainer", "--rank", strconv.Itoa(r), "--world", strconv.Itoa(world), "--peers", peers}, common...), extra(r)...)}
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Kill() })
		ranks = append(ranks, p)
	}
	return ranks
}

func readAdapter(t *testing.T, dir string) map[string][]float32 {
	t.Helper()
	f, err := safetensors.Open(filepath.Join(dir, "adapter_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]float32{}
	for _, n := range f.Names() {
		v, _, err := f.Float32(n)
		if err != nil {
			t.Fatal(err)
		}
		out[n] = v
	}
	return out
}

// TestDataParallelEquivalence trains the same run (global batch 32) with 1, 2
// and 3 real trainer processes: every world size ends with the same adapter
// within 1e-4, and the ranks of one run are byte-identical.
func TestDataParallelEquivalence(t *testing.T) {
	tmp := t.TempDir()
	common := []string{"--data", "../../experiments/data/demo.csv", "--no-cache", "--config", noDropoutConfig(t), "--lora-dropout", "0",
		"--epochs", "1", "--batch-size", "32", "--max-len", "24", "--lr", "2e-3", "--no-calibrate", "--step-timeout", "10s"}
	single := filepath.Join(tmp, "w1")
	if out, err := run(t, append([]string{"train"}, append(slicesWithout(common, "--step-timeout", "10s"), "--out", single)...)...); err != nil {
		t.Fatalf("world 1: %v\n%s", err, out)
	}
	want := readAdapter(t, single)
	for _, world := range []int{2, 3} {
		dirs := make([]string, world)
		ranks := startRanks(t, world, func(r int) []string {
			dirs[r] = filepath.Join(tmp, fmt.Sprintf("w%d-r%d", world, r))
			return []string{"--out", dirs[r]}
		}, common)
		for r, p := range ranks {
			if err := p.Wait(); err != nil {
				for _, q := range ranks {
					t.Logf("--- %s:\n%s", q.Name, q.Tail(20))
				}
				t.Fatalf("world %d rank %d: %v", world, r, err)
			}
		}
		rank0, _ := os.ReadFile(filepath.Join(dirs[0], "adapter_model.safetensors"))
		for r := 1; r < world; r++ {
			other, _ := os.ReadFile(filepath.Join(dirs[r], "adapter_model.safetensors"))
			if len(rank0) == 0 || !bytes.Equal(rank0, other) {
				t.Fatalf("world %d: rank %d's adapter differs from rank 0's", world, r)
			}
		}
		got := readAdapter(t, dirs[0])
		worst := 0.0
		for n, v := range want {
			for i := range v {
				worst = math.Max(worst, math.Abs(float64(v[i]-got[n][i])))
			}
		}
		t.Logf("world %d: max |Δ| vs world 1 = %.3g; ranks byte-identical", world, worst)
		if worst > 1e-4 {
			t.Fatalf("world %d differs from world 1 by up to %v", world, worst)
		}
	}
}

// TestDeadRankFailsOthers SIGKILLs one of three ranks mid-run: the others
// stop with an all-reduce error within the step timeout instead of hanging.
func TestDeadRankFailsOthers(t *testing.T) {
	tmp := t.TempDir()
	common := []string{"--data", "../../experiments/data/demo.csv", "--no-cache", "--config", "tiny", "--epochs", "50",
		"--batch-size", "32", "--max-len", "24", "--step-timeout", "5s", "--store", filepath.Join(tmp, "store"), "--run", "dp",
		"--checkpoint-every", "2"}
	ranks := startRanks(t, 3, func(r int) []string { return []string{"--out", filepath.Join(tmp, fmt.Sprint(r))} }, common)
	manifest := filepath.Join(tmp, "store", "runs", "dp", "ckpt", fmt.Sprintf("%012d", 2), "MANIFEST.json")
	coordinatortest.Eventually(t, 2*time.Minute, func() error {
		if _, err := os.Stat(manifest); err != nil {
			return fmt.Errorf("the run made no checkpoint at step 2 yet:\n%s", ranks[0].Tail(30))
		}
		return nil
	})
	if err := ranks[2].Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for r := range 2 {
		err := ranks[r].Wait()
		took := time.Since(killed)
		if err == nil {
			t.Fatalf("rank %d finished without error after its peer died", r)
		}
		if took > 5*time.Second+10*time.Second {
			t.Fatalf("rank %d took %v to fail (step timeout 5s)", r, took)
		}
		if out := ranks[r].Tail(1000); !strings.Contains(out, "all-reduce") {
			t.Fatalf("rank %d's error does not mention the all-reduce:\n%s", r, out)
		}
		t.Logf("rank %d failed %v after the kill: %s", r, took.Round(time.Millisecond), ranks[r].Tail(1))
	}
}

func slicesWithout(s []string, drop ...string) []string {
	var out []string
	for i := 0; i < len(s); i++ {
		if s[i] == drop[0] {
			i += len(drop) - 1
			continue
		}
		out = append(out, s[i])
	}
	return out
}
