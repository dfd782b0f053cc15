package metrics

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestParseSelection(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      error
	}{
		{"", MacroF1, nil},
		{MacroF1, MacroF1, nil},
		{Accuracy, Accuracy, nil},
		{WeightedF1, WeightedF1, nil},
		{"loss", "", ErrUnknownMetric},
		{NLL, "", ErrUnknownMetric}, // minimised: not a selection metric
	} {
		got, err := ParseSelection(tc.in)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("ParseSelection(%q) = %q, %v; want %q, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// TestScoresKeysAreJSONNames: the metric names are the Report's JSON keys, so
// metrics.json and checkpoint manifests agree, and Metric reads every
// selectable one.
func TestScoresKeysAreJSONNames(t *testing.T) {
	r := Report{N: 1, Accuracy: 0.5, MacroF1: 0.25, WeightedF1: 0.75, ECE: 0.125, NLL: 1.5}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var asJSON map[string]any
	if err := json.Unmarshal(b, &asJSON); err != nil {
		t.Fatal(err)
	}
	for name, v := range r.Scores() {
		if asJSON[name] != v {
			t.Errorf("Scores()[%q] = %v, JSON has %v", name, v, asJSON[name])
		}
	}
	for _, name := range Selectable() {
		if v, ok := r.Metric(name); !ok || v != r.Scores()[name] {
			t.Errorf("Metric(%q) = %v, %v; want %v", name, v, ok, r.Scores()[name])
		}
	}
}
