package metrics

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"slices"
	"testing"
)

const eps = 1e-12

// fromConfusion builds labels and probability rows whose argmax reproduces
// conf[t][p]: each sample puts 0.6 on its predicted class and shares the
// rest equally.
func fromConfusion(conf [][]int) ([]int, [][]float64) {
	k := len(conf)
	var labels []int
	var probs [][]float64
	for t, row := range conf {
		for p, n := range row {
			for range n {
				r := make([]float64, k)
				for j := range r {
					r[j] = 0.4 / float64(k-1)
				}
				r[p] = 0.6
				labels = append(labels, t)
				probs = append(probs, r)
			}
		}
	}
	return labels, probs
}

func near(a, b float64) bool { return math.Abs(a-b) <= eps }

func TestEvaluateCounts(t *testing.T) {
	tests := []struct {
		name      string
		conf      [][]int // [true][pred]
		classes   []string
		precision []float64
		recall    []float64
		f1        []float64
		support   []int
		accuracy  float64
		macroF1   float64
		weighted  float64
	}{
		{
			// Column sums (predicted) 7, 6, 7; row sums (support) 6, 6, 8; N = 20.
			// class 0: P = 5/7, R = 5/6, F1 = 2·5/(7+6) = 10/13
			// class 1: P = 3/6, R = 3/6, F1 = 2·3/(6+6) = 1/2
			// class 2: P = 6/7, R = 6/8, F1 = 2·6/(7+8) = 4/5
			// accuracy = (5+3+6)/20 = 7/10
			// macro F1 = (10/13 + 1/2 + 4/5)/3 = (100+65+104)/130/3 = 269/390 ≈ 0.689744
			// weighted F1 = (6·10/13 + 6·1/2 + 8·4/5)/20 = (60/13 + 94/10)/20
			//             = (1822/130)/20 = 911/1300 ≈ 0.700769
			// (sklearn: f1_score(y, p, average="macro") = 0.68974..., "weighted" = 0.70076...)
			name:      "three classes",
			conf:      [][]int{{5, 1, 0}, {2, 3, 1}, {0, 2, 6}},
			classes:   []string{"a", "b", "c"},
			precision: []float64{5.0 / 7, 3.0 / 6, 6.0 / 7},
			recall:    []float64{5.0 / 6, 3.0 / 6, 6.0 / 8},
			f1:        []float64{10.0 / 13, 1.0 / 2, 4.0 / 5},
			support:   []int{6, 6, 8},
			accuracy:  7.0 / 10,
			macroF1:   269.0 / 390,
			weighted:  911.0 / 1300,
		},
		{
			// Class 1 has no support but is predicted twice; class 2 has
			// support 2 but is never predicted. N = 5.
			// class 0: TP 2, predicted 3, support 3: P = R = F1 = 2/3
			// class 1: TP 0, predicted 2, support 0: P = 0/2 = 0, R = 0/0 → 0, F1 = 0/(2+0) = 0
			// class 2: TP 0, predicted 0, support 2: P = 0/0 → 0, R = 0/2 = 0, F1 = 0/(0+2) = 0
			// accuracy = 2/5; macro F1 = (2/3 + 0 + 0)/3 = 2/9; weighted = 3·(2/3)/5 = 2/5
			// (sklearn with zero_division=0 gives the same; it warns instead of erroring.)
			name:      "zero division: unpredicted class and class without support",
			conf:      [][]int{{2, 1, 0}, {0, 0, 0}, {1, 1, 0}},
			classes:   []string{"a", "b", "c"},
			precision: []float64{2.0 / 3, 0, 0},
			recall:    []float64{2.0 / 3, 0, 0},
			f1:        []float64{2.0 / 3, 0, 0},
			support:   []int{3, 0, 2},
			accuracy:  2.0 / 5,
			macroF1:   2.0 / 9,
			weighted:  2.0 / 5,
		},
		{
			// Class 2 is neither true nor predicted anywhere. It still counts in
			// the macro average (sklearn's labels=[0, 1, 2]; sklearn's default
			// labels would drop it and give 3/4 instead).
			// class 0: TP 2, predicted 3, support 2: P = 2/3, R = 1, F1 = 4/5
			// class 1: TP 1, predicted 1, support 2: P = 1, R = 1/2, F1 = 2/3
			// class 2: F1 = 0/(0+0) → 0
			// macro F1 = (4/5 + 2/3 + 0)/3 = (22/15)/3 = 22/45
			// weighted F1 = (2·4/5 + 2·2/3)/4 = (8/5 + 4/3)/4 = (44/15)/4 = 11/15
			name:      "zero division: class absent from labels and predictions",
			conf:      [][]int{{2, 0, 0}, {1, 1, 0}, {0, 0, 0}},
			classes:   []string{"a", "b", "c"},
			precision: []float64{2.0 / 3, 1, 0},
			recall:    []float64{1, 1.0 / 2, 0},
			f1:        []float64{4.0 / 5, 2.0 / 3, 0},
			support:   []int{2, 2, 0},
			accuracy:  3.0 / 4,
			macroF1:   22.0 / 45,
			weighted:  11.0 / 15,
		},
		{
			// Everything right: every score is 1.
			name:      "perfect",
			conf:      [][]int{{3, 0}, {0, 1}},
			classes:   []string{"a", "b"},
			precision: []float64{1, 1},
			recall:    []float64{1, 1},
			f1:        []float64{1, 1},
			support:   []int{3, 1},
			accuracy:  1,
			macroF1:   1,
			weighted:  1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			labels, probs := fromConfusion(tt.conf)
			r, err := Evaluate(labels, probs, tt.classes, 10)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(r.Confusion, tt.conf) {
				t.Errorf("confusion = %v, want %v", r.Confusion, tt.conf)
			}
			if r.N != len(labels) {
				t.Errorf("N = %d, want %d", r.N, len(labels))
			}
			for c, m := range r.PerClass {
				if m.Name != tt.classes[c] || !near(m.Precision, tt.precision[c]) || !near(m.Recall, tt.recall[c]) ||
					!near(m.F1, tt.f1[c]) || m.Support != tt.support[c] {
					t.Errorf("class %d = %+v, want P %.6f R %.6f F1 %.6f support %d",
						c, m, tt.precision[c], tt.recall[c], tt.f1[c], tt.support[c])
				}
			}
			if !near(r.Accuracy, tt.accuracy) {
				t.Errorf("accuracy = %v, want %v", r.Accuracy, tt.accuracy)
			}
			if !near(r.MacroF1, tt.macroF1) {
				t.Errorf("macro F1 = %v, want %v", r.MacroF1, tt.macroF1)
			}
			if !near(r.WeightedF1, tt.weighted) {
				t.Errorf("weighted F1 = %v, want %v", r.WeightedF1, tt.weighted)
			}
			if r.Temperature != 1 {
				t.Errorf("temperature = %v, want 1", r.Temperature)
			}
		})
	}
}

func TestEvaluateArgmaxTies(t *testing.T) {
	// Ties go to the lowest index: [0.4 0.4 0.2] predicts 0, [0.2 0.4 0.4]
	// predicts 1, [1/3 1/3 1/3] predicts 0.
	labels := []int{0, 2, 2}
	probs := [][]float64{{0.4, 0.4, 0.2}, {0.2, 0.4, 0.4}, {1.0 / 3, 1.0 / 3, 1.0 / 3}}
	r, err := Evaluate(labels, probs, []string{"a", "b", "c"}, 5)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]int{{1, 0, 0}, {0, 0, 0}, {1, 1, 0}}
	if !reflect.DeepEqual(r.Confusion, want) {
		t.Errorf("confusion = %v, want %v", r.Confusion, want)
	}
}

// eceSamples are five 3-class samples with confidences 0.4, 0.45, 0.9, 0.7
// and 0.6; samples 1, 3 and 5 are right.
var eceSamples = struct {
	labels []int
	probs  [][]float64
}{
	labels: []int{0, 0, 0, 2, 2},
	probs: [][]float64{
		{0.4, 0.3, 0.3},   // conf 0.40, pred 0, right
		{0.3, 0.45, 0.25}, // conf 0.45, pred 1, wrong
		{0.9, 0.05, 0.05}, // conf 0.90, pred 0, right
		{0.1, 0.7, 0.2},   // conf 0.70, pred 1, wrong
		{0.2, 0.2, 0.6},   // conf 0.60, pred 2, right
	},
}

func TestEvaluateECE(t *testing.T) {
	// Perfectly calibrated: four samples at confidence 0.75 with three right
	// (bin [0.5, 1]: acc 3/4 = conf 0.75) and five at confidence 0.4 with two
	// right (bin [0, 0.5): acc 2/5 = conf 0.4) → ECE 0.
	hi, lo := []float64{0.75, 0.25, 0}, []float64{0.4, 0.3, 0.3}
	calLabels := []int{0, 0, 0, 1, 0, 0, 1, 2, 2}
	calProbs := [][]float64{hi, hi, hi, hi, lo, lo, lo, lo, lo}

	tests := []struct {
		name     string
		labels   []int
		probs    [][]float64
		bins     int
		ece      float64
		meanConf float64
	}{
		{
			// One bin: ECE = |accuracy − mean confidence| = |3/5 − 3.05/5| = 0.01.
			name: "one bin", labels: eceSamples.labels, probs: eceSamples.probs, bins: 1,
			ece: 0.01, meanConf: 0.61,
		},
		{
			// Bins [0, 0.5) and [0.5, 1].
			// bin 0: confs 0.4, 0.45; 1 of 2 right: acc 0.5, conf 0.425,
			//        |0.5 − 0.425| = 0.075, weight 2/5 → 0.03
			// bin 1: confs 0.9, 0.7, 0.6; 2 of 3 right: acc 2/3, conf 2.2/3,
			//        |2/3 − 2.2/3| = 0.2/3, weight 3/5 → 0.04
			// ECE = 0.03 + 0.04 = 0.07
			name: "two bins", labels: eceSamples.labels, probs: eceSamples.probs, bins: 2,
			ece: 0.07, meanConf: 0.61,
		},
		{
			// Bins [0, 1/3), [1/3, 2/3), [2/3, 1].
			// bin 0: empty
			// bin 1: confs 0.4, 0.45, 0.6; 2 of 3 right: acc 2/3, conf 1.45/3,
			//        |2/3 − 1.45/3| = 0.55/3, weight 3/5 → 0.11
			// bin 2: confs 0.9, 0.7; 1 of 2 right: acc 0.5, conf 0.8,
			//        |0.5 − 0.8| = 0.3, weight 2/5 → 0.12
			// ECE = 0.11 + 0.12 = 0.23
			name: "three bins", labels: eceSamples.labels, probs: eceSamples.probs, bins: 3,
			ece: 0.23, meanConf: 0.61,
		},
		{
			name: "perfectly calibrated", labels: calLabels, probs: calProbs, bins: 2,
			// mean confidence = (4·0.75 + 5·0.4)/9 = 5/9
			ece: 0, meanConf: 5.0 / 9,
		},
		{
			// Confidence exactly 1 falls in the last bin [0.5, 1]; right, so
			// acc 1 = conf 1 → 0.
			name: "confidence one, right", labels: []int{0}, probs: [][]float64{{1, 0}}, bins: 2,
			ece: 0, meanConf: 1,
		},
		{
			// Confidence 1 and wrong: acc 0, conf 1 → ECE 1.
			name: "confidence one, wrong", labels: []int{1}, probs: [][]float64{{1, 0}}, bins: 2,
			ece: 1, meanConf: 1,
		},
		{
			// Confidence exactly 0.5 opens bin 1 of 2, [0.5, 1): a two-class
			// coin flip, half right → acc 0.5 = conf 0.5.
			name: "bin edge", labels: []int{0, 1}, probs: [][]float64{{0.5, 0.5}, {0.5, 0.5}}, bins: 2,
			ece: 0, meanConf: 0.5,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Evaluate(tt.labels, tt.probs, []string{"a", "b", "c"}[:len(tt.probs[0])], tt.bins)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(r.ECE-tt.ece) > 1e-9 {
				t.Errorf("ECE = %v, want %v", r.ECE, tt.ece)
			}
			if r.ECEBins != tt.bins {
				t.Errorf("ECEBins = %d, want %d", r.ECEBins, tt.bins)
			}
			if math.Abs(r.MeanConfidence-tt.meanConf) > 1e-9 {
				t.Errorf("mean confidence = %v, want %v", r.MeanConfidence, tt.meanConf)
			}
		})
	}
}

func TestConfidenceBin(t *testing.T) {
	tests := []struct {
		conf float64
		bins int
		want int
	}{
		{0, 10, 0},
		{0.0999, 10, 0},
		{0.1, 10, 1},
		{0.5, 2, 1},
		{0.4999, 2, 0},
		{1, 15, 14},
		{1 + 1e-9, 15, 14}, // rounding above 1 still lands in the last bin
		{0.99, 1, 0},
	}
	for _, tt := range tests {
		if got := confidenceBin(tt.conf, tt.bins); got != tt.want {
			t.Errorf("confidenceBin(%v, %d) = %d, want %d", tt.conf, tt.bins, got, tt.want)
		}
	}
}

func TestEvaluateNLL(t *testing.T) {
	tests := []struct {
		name   string
		labels []int
		probs  [][]float64
		want   float64
	}{
		{
			// p(true) = 0.4, 0.3, 0.9, 0.2, 0.6.
			name: "five samples", labels: eceSamples.labels, probs: eceSamples.probs,
			want: -(math.Log(0.4) + math.Log(0.3) + math.Log(0.9) + math.Log(0.2) + math.Log(0.6)) / 5,
		},
		{
			// p(true) = 1 → 0 nats.
			name: "certain and right", labels: []int{1}, probs: [][]float64{{0, 1}}, want: 0,
		},
		{
			// p(true) = 0 is clamped at 1e-12: (−log 1e-12 + −log 1)/2 = 12·ln 10/2.
			name: "clamped", labels: []int{1, 0}, probs: [][]float64{{1, 0}, {1, 0}}, want: 12 * math.Ln10 / 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Evaluate(tt.labels, tt.probs, []string{"a", "b", "c"}[:len(tt.probs[0])], 10)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(r.NLL-tt.want) > 1e-9 {
				t.Errorf("NLL = %v, want %v", r.NLL, tt.want)
			}
		})
	}
}

func TestEvaluateErrors(t *testing.T) {
	names := []string{"a", "b", "c"}
	row := []float64{0.2, 0.3, 0.5}
	tests := []struct {
		name    string
		labels  []int
		probs   [][]float64
		classes []string
		bins    int
		want    error
	}{
		{"no samples", nil, nil, names, 10, ErrEmpty},
		{"no classes", []int{0}, [][]float64{{}}, nil, 10, ErrEmpty},
		{"more labels", []int{0, 1}, [][]float64{row}, names, 10, ErrLengthMismatch},
		{"more rows", []int{0}, [][]float64{row, row}, names, 10, ErrLengthMismatch},
		{"labels only", []int{0}, nil, names, 10, ErrLengthMismatch},
		{"short row", []int{0, 1}, [][]float64{row, {0.5, 0.5}}, names, 10, ErrWidth},
		{"long row", []int{0}, [][]float64{{0.1, 0.2, 0.3, 0.4}}, names, 10, ErrWidth},
		{"negative label", []int{-1}, [][]float64{row}, names, 10, ErrLabelRange},
		{"label too large", []int{0, 3}, [][]float64{row, row}, names, 10, ErrLabelRange},
		{"NaN", []int{0}, [][]float64{{math.NaN(), 0.5, 0.5}}, names, 10, ErrNotFinite},
		{"+Inf", []int{0}, [][]float64{{0, math.Inf(1), 0}}, names, 10, ErrNotFinite},
		{"-Inf", []int{0}, [][]float64{{0, 0, math.Inf(-1)}}, names, 10, ErrNotFinite},
		{"negative probability", []int{0}, [][]float64{{-0.1, 0.6, 0.5}}, names, 10, ErrProbability},
		{"probability above one", []int{0}, [][]float64{{1.5, 0, 0}}, names, 10, ErrProbability},
		{"zero bins", []int{0}, [][]float64{row}, names, 0, ErrBins},
		{"negative bins", []int{0}, [][]float64{row}, names, -3, ErrBins},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Evaluate(tt.labels, tt.probs, tt.classes, tt.bins)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestEvaluateAcceptsRounding(t *testing.T) {
	// A probability a hair above 1 (float32 softmax widened) is accepted.
	if _, err := Evaluate([]int{0}, [][]float64{{1 + 1e-9, 0}}, []string{"a", "b"}, 10); err != nil {
		t.Fatal(err)
	}
}

func TestReportJSON(t *testing.T) {
	labels, probs := fromConfusion([][]int{{1, 1}, {0, 2}})
	r, err := Evaluate(labels, probs, []string{"a", "b"}, DefaultECEBins)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"accuracy", "confusion", "ece", "ece_bins", "macro_f1", "mean_confidence", "n", "nll", "per_class", "review_below", "review_share", "review_target", "temperature", "weighted_f1"}
	if !slices.Equal(keys, want) {
		t.Errorf("keys = %v, want %v", keys, want)
	}
	var pc []map[string]json.RawMessage
	if err := json.Unmarshal(m["per_class"], &pc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"name", "precision", "recall", "f1", "support"} {
		if _, ok := pc[0][k]; !ok {
			t.Errorf("per_class entry lacks %q: %s", k, m["per_class"])
		}
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, r) {
		t.Errorf("round trip = %+v, want %+v", back, r)
	}
}

func TestReviewThreshold(t *testing.T) {
	tests := []struct {
		name             string
		conf             []float64
		correct          []bool
		target           float64
		wantT, wantShare float64
	}{
		{"all right: nothing to review", []float64{0.9, 0.5, 0.3}, []bool{true, true, true}, 0.9, 0.3, 0},
		{"the unsure ones are wrong", []float64{0.95, 0.9, 0.8, 0.4, 0.3}, []bool{true, true, true, false, false}, 0.9, 0.8, 0.4},
		{"one mistake tolerated at 0.75", []float64{0.9, 0.8, 0.7, 0.6}, []bool{true, false, true, true}, 0.75, 0.6, 0},
		{"a tie is cut whole", []float64{0.9, 0.5, 0.5}, []bool{true, true, false}, 0.9, 0.9, 2.0 / 3},
		{"never reaches the target", []float64{0.9, 0.8}, []bool{false, false}, 0.9, 1, 1},
		{"no samples", nil, nil, 0.9, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th, share := ReviewThreshold(tt.conf, tt.correct, tt.target)
			if th != tt.wantT || math.Abs(share-tt.wantShare) > 1e-12 {
				t.Errorf("ReviewThreshold = %v, %v; want %v, %v", th, share, tt.wantT, tt.wantShare)
			}
		})
	}
}
