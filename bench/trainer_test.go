package bench

import (
	"encoding/json"
	"testing"
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
