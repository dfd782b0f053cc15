package coordinator

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// TestSweepSpecSeveralErrors: every bad field of a spec is reported, each
// as its own *SpecError with the field and the line it is on (a list
// entry's own line; a defaulted field's closest written ancestor).
func TestSweepSpecSeveralErrors(t *testing.T) {
	type loc struct {
		Line  int
		Field string
	}
	tests := []struct {
		name string
		spec string
		want []loc
	}{
		{
			name: "one per field, in file order",
			spec: `name: bad name
search: bayes
trainers_per_trial: 2
metric: loss
space:
  rank: [8, 0]
  alpha:
    - 16
    - -1
  lora_dropout: [1.5]
train:
  epochs: -1
  split: 70/20
  max_len: 1024
  quant: int8
`,
			want: []loc{{1, "name"}, {2, "search"}, {4, "metric"}, {6, "space.rank"}, {9, "space.alpha"}, {10, "space.lora_dropout"},
				{12, "train.epochs"}, {13, "train.split"}, {14, "train.max_len"}, {15, "train.quant"}},
		},
		{
			name: "defaults are validated too",
			spec: "name: a\ntrainers_per_trial: 32\ntrain:\n  epochs: 1\n",
			// batch_size defaults to 16 < 32 trainers: reported at train, the closest line written.
			want: []loc{{3, "train.batch_size"}},
		},
		{
			name: "early stopping fields",
			spec: "name: a\nearly_stopping:\n  rule: asha\n  grace_steps: -1\n  reduction_factor: 1\n",
			want: []loc{{4, "early_stopping.grace_steps"}, {5, "early_stopping.reduction_factor"}},
		},
		{
			name: "decoding: every unknown field and bad type",
			spec: "name: a\nranks: [4]\nspace:\n  rank: [eight]\ntrain:\n  epoch: 3\n",
			want: []loc{{2, "ranks"}, {4, "space.rank"}, {6, "train.epoch"}},
		},
		{
			name: "missing name has no line",
			spec: "search: grid\nspace:\n  seed: [1]\n",
			want: []loc{{0, "name"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSweepSpec([]byte(tc.spec), "spec.yaml")
			var errs SpecErrors
			if !errors.As(err, &errs) {
				t.Fatalf("error %v (%T) is not SpecErrors", err, err)
			}
			if !errors.Is(err, ErrSpec) {
				t.Errorf("error does not wrap ErrSpec")
			}
			var got []loc
			for _, e := range errs {
				got = append(got, loc{e.Line, e.Field})
				if e.File != "spec.yaml" || e.Msg == "" {
					t.Errorf("error %+v: want the file and a message", e)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("errors at %v, want %v:\n%v", got, tc.want, err)
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(tc.want) {
				t.Errorf("Error() has %d lines, want one per problem:\n%v", n, err)
			}
		})
	}
}

func TestSpecErrorFormat(t *testing.T) {
	for _, tc := range []struct {
		e    SpecError
		want string
	}{
		{SpecError{File: "spec.yaml", Line: 12, Field: "train.split", Msg: "bad"}, "spec.yaml:12: field train.split: bad"},
		{SpecError{File: "spec.yaml", Field: "name", Msg: "is required"}, "spec.yaml: field name: is required"},
		{SpecError{File: "spec.yaml", Line: 3, Msg: "did not find expected node content"}, "spec.yaml:3: did not find expected node content"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
	var first *SpecError
	errs := SpecErrors{{File: "a", Line: 1, Field: "x", Msg: "m"}, {File: "a", Line: 2, Field: "y", Msg: "n"}}
	if !errors.As(error(errs), &first) || first.Field != "x" {
		t.Errorf("errors.As(SpecErrors, *SpecError) = %v", first)
	}
}

// TestSweepSpecSplitSpellings: a spec takes the split spellings flags take.
func TestSweepSpecSplitSpellings(t *testing.T) {
	for _, split := range []string{"80/10/10", "0.8,0.1,0.1", "0.8/0.1/0.1", "70,20,10"} {
		if _, err := ParseSweepSpec([]byte("name: a\ntrain:\n  split: \""+split+"\"\n"), "s.yaml"); err != nil {
			t.Errorf("split %q: %v", split, err)
		}
	}
	s, err := ParseSweepSpec([]byte("name: a\n"), "s.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s.Train.Split != "80/10/10" || s.Train.Config != "" || s.Space.Alpha[0] != 16 || s.Space.Dropout[0] != 0.05 || s.Metric != "macro_f1" {
		t.Errorf("defaults: split %q config %q alpha %v dropout %v metric %q", s.Train.Split, s.Train.Config, s.Space.Alpha, s.Space.Dropout, s.Metric)
	}
}
