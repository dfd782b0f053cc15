package bench

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loraft/loraft/internal/proc"
)

// TestPool: rounds of one variant pool their timed steps (as they come back
// from JSON) and keep the larger peaks.
func TestPool(t *testing.T) {
	decode := func(s string) map[string]any {
		var v map[string]any
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	a := pool(nil, decode(`{"step_s":[2,4],"step_s_mean":3,"samples_per_s":2.667,"peak_rss_mb":900,"impl":"go"}`), 8)
	if a["rounds"] != 1 || a["step_s_mean"] != 3.0 {
		t.Fatalf("first round: %v", a)
	}
	got := pool(a, decode(`{"step_s":[1,5,3],"step_s_mean":3,"peak_rss_mb":1000,"impl":"go"}`), 8)
	for k, want := range map[string]any{"rounds": 2, "step_s_mean": 3.0, "step_s_p50": 3.0, "step_s_min": 1.0,
		"samples_per_s": 8 / 3.0, "peak_rss_mb": 1000.0, "impl": "go"} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
	if steps := got["step_s"].([]any); len(steps) != 5 {
		t.Errorf("pooled steps %v, want all 5", steps)
	}
}

// TestTrainerStepSeconds: the all-reduce benchmark finds the NF4 step time in
// an fp32 report (as make bench-trainer writes) and in a bf16-only one (as
// gpu-check's cuda run writes), and no time in anything else.
func TestTrainerStepSeconds(t *testing.T) {
	for _, tc := range []struct {
		name, report string
		want         float64
	}{
		{"fp32", `{"batch":8,"go_samples_per_s":2,"bf16":{"go_nf4_samples_per_s":4}}`, 4},
		{"bf16 only", `{"batch":32,"bf16":{"go_nf4_samples_per_s":64}}`, 0.5},
		{"no run", `{"batch":8}`, 0},
		{"no batch", `{"go_samples_per_s":2}`, 0},
		{"not JSON", `step`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := trainerStepSeconds([]byte(tc.report)); got != tc.want {
				t.Errorf("trainerStepSeconds(%s) = %v, want %v", tc.report, got, tc.want)
			}
		})
	}
}

func TestRatioAndCost(t *testing.T) {
	for _, tc := range []struct {
		a, b       float64
		ratio, cst any
	}{
		{3, 2, 1.5, 0.5},
		{2, 2, 1.0, 0.0},
		{0, 2, nil, nil}, // a failed run's missing figure
		{2, 0, nil, nil},
		{-1, 2, nil, nil},
		{math.NaN(), 2, nil, nil},
	} {
		if got := ratio(tc.a, tc.b); got != tc.ratio {
			t.Errorf("ratio(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.ratio)
		}
		if got := cost(tc.a, tc.b); got != tc.cst {
			t.Errorf("cost(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.cst)
		}
	}
}

// TestTrainerKeepsFiguresOfFailedVariant runs the trainer benchmark with a
// stand-in loraft whose steps succeed (bench step's JSON) and a reference
// that fails, as it might on a device it was never tried on: the report
// keeps loraft's figures, records the reference's error, and leaves the
// ratios that need it null, still valid JSON. When every run fails, the
// benchmark fails.
func TestTrainerKeepsFiguresOfFailedVariant(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	step := write("loraft", "#!/bin/sh\n"+`echo '{"impl":"go","step_s":[2,2],"step_s_mean":2,"step_s_min":2,"samples_per_s":4,"peak_rss_mb":100}'`+"\n")
	failing := write("python", "#!/bin/sh\necho 'qlora_step.py: no such device' >&2\nexit 2\n")
	cfg := TrainerConfig{Config: "tiny", Device: "cpu", Computes: []string{"fp32"}, Seq: 16, Batch: 8, Steps: 2, Rounds: 2,
		Python: failing, Reference: "qlora_step.py"}

	var partial []string // each progress report as JSON, as --out gets it
	cfg.Progress = func(r Report) {
		b, err := json.Marshal(r)
		if err != nil {
			t.Errorf("partial report: %v", err)
		}
		partial = append(partial, string(b))
	}
	report, err := (&Runner{Bin: proc.Binary{Path: step}}).Trainer(context.Background(), cfg)
	if err != nil {
		t.Fatalf("one failing variant failed the benchmark: %v", err)
	}
	// A report after every run (4 variants × 2 rounds), marked partial,
	// the first with go_nf4's figures already; the final one is not partial.
	if len(partial) != 8 {
		t.Errorf("%d partial reports, want one per run (8)", len(partial))
	} else if !strings.Contains(partial[0], `"partial":true`) || !strings.Contains(partial[0], `"samples_per_s":4`) ||
		!strings.Contains(partial[3], "no such device") {
		t.Errorf("partial reports lack what was measured:\nfirst %s\nfourth %s", partial[0], partial[3])
	}
	if _, ok := report["partial"]; ok {
		t.Error("the final report is marked partial")
	}
	if _, err := json.Marshal(report); err != nil {
		t.Fatalf("the report is no longer JSON: %v", err)
	}
	fp := report["fp32"].(map[string]any)
	runs := fp["runs"].(map[string]map[string]any)
	if e, _ := runs["torch"]["error"].(string); !strings.Contains(e, "no such device") {
		t.Errorf("the reference's error is not recorded: %v", runs["torch"])
	}
	if got := fp["go_nf4_samples_per_s"]; got != 4.0 {
		t.Errorf("go_nf4_samples_per_s = %v, want 4 (loraft's figures kept)", got)
	}
	if runs["go_nf4"]["rounds"] != 2 {
		t.Errorf("go_nf4 pooled %v rounds, want 2", runs["go_nf4"]["rounds"])
	}
	if fp["go_over_torch"] != nil || report["ratio"] != nil {
		t.Errorf("go_over_torch = %v, ratio = %v; want null without the reference", fp["go_over_torch"], report["ratio"])
	}
	if fp["nf4_cost_over_fp32_base"] != 0.0 {
		t.Errorf("nf4_cost_over_fp32_base = %v, want 0 (same stand-in step)", fp["nf4_cost_over_fp32_base"])
	}

	cfg.Rounds = 1
	if _, err := (&Runner{Bin: proc.Binary{Path: failing}}).Trainer(context.Background(), cfg); err == nil ||
		!strings.Contains(err.Error(), "every fp32 run failed") {
		t.Fatalf("every run failing: err = %v", err)
	}
}

func TestRotate(t *testing.T) {
	s := []string{"nf4", "ckpt", "fp32", "torch"}
	for _, tc := range []struct {
		r    int
		want string
	}{{0, "nf4 ckpt fp32 torch"}, {1, "ckpt fp32 torch nf4"}, {3, "torch nf4 ckpt fp32"}, {4, "nf4 ckpt fp32 torch"}} {
		if got := strings.Join(rotate(s, tc.r), " "); got != tc.want {
			t.Errorf("rotate(%d) = %s, want %s", tc.r, got, tc.want)
		}
	}
	if strings.Join(s, " ") != "nf4 ckpt fp32 torch" {
		t.Errorf("rotate changed its input: %v", s)
	}
	if rotate([]string{}, 3) != nil {
		t.Error("rotate of nothing is not nothing")
	}
}
