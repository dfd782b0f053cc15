package coordinator

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRankAlphaSpec(t *testing.T) {
	data, err := os.ReadFile("../experiments/rank-alpha.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseSweepSpec(data, "rank-alpha.yaml")
	if err != nil {
		t.Fatal(err)
	}
	trials := s.Expand()
	if len(trials) != 9 || s.GridSize() != 9 {
		t.Fatalf("%d trials (grid %d), want 9", len(trials), s.GridSize())
	}
	seen := map[[2]float64]bool{}
	for i, tr := range trials {
		if tr.Index != i || tr.Name != "rank-alpha-t00"+string(rune('0'+i)) || tr.TargetModules != "all-linear" || tr.LearningRate != 2e-3 {
			t.Fatalf("trial %d = %+v", i, tr)
		}
		seen[[2]float64{float64(tr.Rank), tr.Alpha}] = true
	}
	if len(seen) != 9 {
		t.Fatalf("grid points %v, want every rank × alpha once", seen)
	}
	if trials[0].Rank != 4 || trials[0].Alpha != 8 || trials[8].Rank != 16 || trials[8].Alpha != 32 {
		t.Fatalf("grid order: first %+v last %+v", trials[0], trials[8])
	}
}

func TestRandomSearchDeterministic(t *testing.T) {
	spec := `
name: rs
search: random
trials: 20
search_seed: 7
space:
  rank: [4, 8, 16]
  alpha: [8, 32]
  learning_rate_range: {min: 1.0e-5, max: 1.0e-2, log: true}
  target_modules: ["query,value", "all-linear"]
`
	a, err := ParseSweepSpec([]byte(spec), "rs.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ParseSweepSpec([]byte(spec), "rs.yaml")
	ta, tb := a.Expand(), b.Expand()
	if len(ta) != 20 || !reflect.DeepEqual(ta, tb) {
		t.Fatalf("random search is not deterministic or has %d trials", len(ta))
	}
	ranks := map[int]bool{}
	for _, tr := range ta {
		ranks[tr.Rank] = true
		if tr.LearningRate < 1e-5 || tr.LearningRate > 1e-2 {
			t.Fatalf("learning rate %v outside the range", tr.LearningRate)
		}
	}
	if len(ranks) < 2 {
		t.Fatalf("20 draws used only ranks %v", ranks)
	}
	c, _ := ParseSweepSpec([]byte(strings.Replace(spec, "search_seed: 7", "search_seed: 8", 1)), "rs.yaml")
	if reflect.DeepEqual(c.Expand(), ta) {
		t.Fatal("another search seed gave the same trials")
	}
}

func TestSweepSpecErrors(t *testing.T) {
	tests := []struct {
		name, spec, want string
	}{
		{"missing name", "search: grid\n", "s.yaml: field name: is required"},
		{"bad search", "name: a\nsearch: bayes\n", "s.yaml:2: field search: \"bayes\", want grid or random"},
		{"unknown field", "name: a\nranks: [4]\n", "s.yaml:2: field ranks: unknown field"},
		{"bad rank", "name: a\nspace:\n  rank: [0, 8]\n", "s.yaml:3: field space.rank: rank 0, want 1..1024"},
		{"bad type", "name: a\nspace:\n  rank: [eight]\n", "s.yaml:3: field space.rank: cannot unmarshal"},
		{"random without trials", "name: a\nsearch: random\n", "field trials"},
		{"range on grid", "name: a\nspace:\n  learning_rate_range: {min: 1.0e-5, max: 1.0e-3}\n", "ranges need random search"},
		{"bad metric", "name: a\nmetric: loss\n", "field metric"},
		{"bad early stopping", "name: a\nearly_stopping: {rule: hyperband}\n", "field early_stopping.rule"},
		{"batch smaller than world", "name: a\ntrainers_per_trial: 4\ntrain: {batch_size: 2}\n", "field train.batch_size"},
		{"not yaml", "name: [a\n", "s.yaml"},
		{"base and weights", "name: a\ntrain:\n  base: bert-base-uncased\n  weights: w.safetensors\n", "s.yaml:4: field train.weights: \"w.safetensors\" with train.base \"bert-base-uncased\": give one"},
		{"base and config", "name: a\ntrain:\n  config: tiny\n  base: /models/bert\n", "s.yaml:3: field train.config: \"tiny\" with train.base"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSweepSpec([]byte(tc.spec), "s.yaml")
			if !errors.Is(err, ErrSpec) {
				t.Fatalf("error %v does not wrap ErrSpec", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// FuzzParseSweepSpec: any input either parses to a spec whose expansion is
// non-empty and within the grid, or fails with a SpecError.
func FuzzParseSweepSpec(f *testing.F) {
	f.Add([]byte("name: a\nspace:\n  rank: [4, 8]\n"))
	f.Add([]byte("name: rs\nsearch: random\ntrials: 3\nspace:\n  learning_rate_range: {min: 1.0e-5, max: 1.0e-3, log: true}\n"))
	f.Add([]byte("name: x\ntrials: 2\nearly_stopping: {rule: asha}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSweepSpec(data, "fuzz.yaml")
		if err != nil {
			var se *SpecError
			if !errors.As(err, &se) {
				t.Fatalf("error is not a *SpecError: %v", err)
			}
			return
		}
		if s.GridSize() > 100000 {
			return // a huge grid is valid but not worth expanding here
		}
		trials := s.Expand()
		if len(trials) == 0 {
			t.Fatal("a valid spec expanded to no trials")
		}
		if s.Search == SearchGrid && len(trials) > s.GridSize() {
			t.Fatalf("%d trials from a grid of %d", len(trials), s.GridSize())
		}
	})
}

func TestSweepWarmupDefault(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want *float64
	}{
		{"name: a\n", nil},
		{"name: a\ntrain:\n  warmup_ratio: 0.0\n", new(float64)},
	} {
		s, err := ParseSweepSpec([]byte(tc.yaml), "s.yaml")
		if err != nil {
			t.Fatal(err)
		}
		got := s.Sweep(nil, "x", time.Unix(0, 0)).GetTrain().WarmupRatio
		if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
			t.Fatalf("%q: warmup %v, want %v (unset means the trainer's default)", tc.yaml, got, tc.want)
		}
	}
}

func TestSweepBucketByLength(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want bool
	}{
		{"name: a\n", false},
		{"name: a\ntrain:\n  bucket_by_length: true\n", true},
	} {
		s, err := ParseSweepSpec([]byte(tc.yaml), "s.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Sweep(nil, "x", time.Unix(0, 0)).GetTrain().GetBucketByLength(); got != tc.want {
			t.Fatalf("%q: bucket_by_length %v, want %v", tc.yaml, got, tc.want)
		}
	}
}

func TestTrialSweep(t *testing.T) {
	for _, tc := range []struct {
		run, sweep string
		ok         bool
	}{
		{TrialName("demo", 0), "demo", true},
		{TrialName("demo", 12), "demo", true},
		{TrialName("demo", 1234), "demo", true},
		{TrialName("demo-2", 0), "demo-2", true},
		{TrialName("a-t001", 3), "a-t001", true},
		{"demo-t0001", "", false}, // TrialName pads to three digits, no more
		{"demo-t01", "", false},
		{"demo-t", "", false},
		{"demo-tx01", "", false},
		{"demo", "", false},
		{"-t000", "", false},
		{"my-run", "", false},
	} {
		sweep, ok := TrialSweep(tc.run)
		if sweep != tc.sweep || ok != tc.ok {
			t.Errorf("TrialSweep(%q) = %q, %v; want %q, %v", tc.run, sweep, ok, tc.sweep, tc.ok)
		}
	}
}
