package metrics

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

func TestSoftmax(t *testing.T) {
	third := 1.0 / 3
	tests := []struct {
		name   string
		logits []float64
		temp   float64
		want   []float64
	}{
		// exp(0)/(exp(0)+exp(ln 3)) = 1/4.
		{"plain", []float64{0, math.Log(3)}, 1, []float64{0.25, 0.75}},
		// Dividing by T = 2 halves ln 4 to ln 2: 1/(1+2) and 2/(1+2).
		{"temperature", []float64{0, math.Log(4)}, 2, []float64{third, 2 * third}},
		// Naively exp(1000) = +Inf and exp(-1000) = 0: Inf/Inf = NaN.
		{"huge gap", []float64{1000, -1000}, 1, []float64{1, 0}},
		{"huge equal", []float64{1000, 1000}, 1, []float64{0.5, 0.5}},
		{"very negative equal", []float64{-1000, -1000, -1000}, 1, []float64{third, third, third}},
		// Shift invariance: softmax(z + 1000) = softmax(z).
		{"shifted", []float64{1000, 1000 + math.Log(3)}, 1, []float64{0.25, 0.75}},
		{"tiny temperature", []float64{1, 2}, 1e-6, []float64{0, 1}},
		{"huge temperature", []float64{1, 2}, 1e12, []float64{0.5, 0.5}},
		{"single", []float64{-7}, 1, []float64{1}},
		{"+Inf takes the mass", []float64{0, math.Inf(1), 5, math.Inf(1)}, 1, []float64{0, 0.5, 0, 0.5}},
		{"-Inf gets zero", []float64{math.Inf(-1), 0}, 1, []float64{0, 1}},
		{"all -Inf", []float64{math.Inf(-1), math.Inf(-1)}, 1, []float64{0.5, 0.5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Softmax(tt.logits, tt.temp)
			if len(got) != len(tt.want) {
				t.Fatalf("Softmax = %v, want %v", got, tt.want)
			}
			var sum float64
			for j := range got {
				if math.IsNaN(got[j]) || math.Abs(got[j]-tt.want[j]) > 1e-12 {
					t.Errorf("Softmax = %v, want %v", got, tt.want)
					break
				}
				sum += got[j]
			}
			if math.Abs(sum-1) > 1e-12 {
				t.Errorf("sum = %v, want 1", sum)
			}
		})
	}
}

func TestSoftmaxInvalid(t *testing.T) {
	tests := []struct {
		name   string
		logits []float64
		temp   float64
	}{
		{"empty", nil, 1},
		{"zero temperature", []float64{1, 2}, 0},
		{"negative temperature", []float64{1, 2}, -1},
		{"NaN temperature", []float64{1, 2}, math.NaN()},
		{"infinite temperature", []float64{1, 2}, math.Inf(1)},
	}
	for _, tt := range tests {
		if got := Softmax(tt.logits, tt.temp); got != nil {
			t.Errorf("%s: Softmax = %v, want nil", tt.name, got)
		}
	}
	got := Softmax([]float64{0, math.NaN()}, 1)
	if len(got) != 2 || !math.IsNaN(got[0]) || !math.IsNaN(got[1]) {
		t.Errorf("Softmax with a NaN logit = %v, want all NaN", got)
	}
}

func TestCalibrate(t *testing.T) {
	logits := [][]float64{{0, math.Log(4)}, {math.Log(9), 0}}
	// T = 2: softmax([0, ln 2]) = [1/3, 2/3]; softmax([ln 3, 0]) = [3/4, 1/4].
	want := [][]float64{{1.0 / 3, 2.0 / 3}, {0.75, 0.25}}
	got := Calibrate(logits, 2)
	for i := range want {
		for j := range want[i] {
			if math.Abs(got[i][j]-want[i][j]) > 1e-12 {
				t.Fatalf("Calibrate = %v, want %v", got, want)
			}
		}
	}
	if got := Calibrate(logits, 0); got != nil {
		t.Errorf("Calibrate(T = 0) = %v, want nil", got)
	}
}

// overconfident draws n samples of k logits z ~ N(0, scale²) each and labels
// from softmax(z / trueT): a model whose logits are trueT times too sharp.
func overconfident(seed uint64, n, k int, scale, trueT float64) ([][]float64, []int) {
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	logits := make([][]float64, n)
	labels := make([]int, n)
	for i := range n {
		z := make([]float64, k)
		for j := range z {
			z[j] = scale * r.NormFloat64()
		}
		p := Softmax(z, trueT)
		u := r.Float64()
		labels[i] = k - 1
		for j, pj := range p {
			if u < pj {
				labels[i] = j
				break
			}
			u -= pj
		}
		logits[i] = z
	}
	return logits, labels
}

func TestFitTemperatureRecovers(t *testing.T) {
	tests := []struct {
		name  string
		trueT float64
		tol   float64
	}{
		{"overconfident", 2.5, 0.15},
		{"calibrated", 1, 0.06},
		{"underconfident", 0.5, 0.03},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logits, labels := overconfident(42, 5000, 7, 3, tt.trueT)
			got, err := FitTemperature(logits, labels)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("true T %.2f, fitted T %.4f", tt.trueT, got)
			if math.Abs(got-tt.trueT) > tt.tol {
				t.Errorf("fitted T = %.4f, want %.2f ± %.2f", got, tt.trueT, tt.tol)
			}
		})
	}
}

func TestFitTemperatureImprovesCalibration(t *testing.T) {
	names := []string{"Normal", "Depression", "Suicidal", "Anxiety", "Bipolar", "Stress", "Personality disorder"}
	logits, labels := overconfident(7, 5000, len(names), 3, 2.5)
	T, err := FitTemperature(logits, labels)
	if err != nil {
		t.Fatal(err)
	}
	before, err := Evaluate(labels, Calibrate(logits, 1), names, DefaultECEBins)
	if err != nil {
		t.Fatal(err)
	}
	after, err := Evaluate(labels, Calibrate(logits, T), names, DefaultECEBins)
	if err != nil {
		t.Fatal(err)
	}
	after.Temperature = T
	t.Logf("T = %.4f: NLL %.4f → %.4f, ECE %.4f → %.4f, confidence %.4f → %.4f, accuracy %.4f",
		T, before.NLL, after.NLL, before.ECE, after.ECE, before.MeanConfidence, after.MeanConfidence, after.Accuracy)
	if !(after.NLL < before.NLL) {
		t.Errorf("NLL %v after calibration, not below %v", after.NLL, before.NLL)
	}
	if !(after.ECE < before.ECE) {
		t.Errorf("ECE %v after calibration, not below %v", after.ECE, before.ECE)
	}
	if !(after.MeanConfidence < before.MeanConfidence) {
		t.Errorf("mean confidence %v after T > 1, not below %v", after.MeanConfidence, before.MeanConfidence)
	}
	// Temperature never changes the argmax.
	if after.Accuracy != before.Accuracy || after.MacroF1 != before.MacroF1 {
		t.Errorf("accuracy/macro F1 changed: %v/%v → %v/%v", before.Accuracy, before.MacroF1, after.Accuracy, after.MacroF1)
	}
	// The fitted T is the NLL minimum: nudging it either way does no better.
	for _, f := range []float64{0.98, 1.02} {
		if nll := meanNLL(logits, labels, T*f); nll < meanNLL(logits, labels, T) {
			t.Errorf("NLL at %.4f·T = %v below NLL at T = %v", f, nll, meanNLL(logits, labels, T))
		}
	}
}

func TestFitTemperatureDeterministic(t *testing.T) {
	logits, labels := overconfident(3, 500, 4, 2, 1.7)
	a, err := FitTemperature(logits, labels)
	if err != nil {
		t.Fatal(err)
	}
	b, err := FitTemperature(logits, labels)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Errorf("two fits differ: %v and %v", a, b)
	}
}

func TestFitTemperatureBounds(t *testing.T) {
	// Always right with a margin: sharper is always better, so the search
	// runs to the lower bound.
	sharp := [][]float64{{2, 0, 0}, {0, 2, 0}, {0, 0, 2}}
	// Labels that ignore the logits: the best model is uniform, T → ∞, so the
	// search runs to the upper bound.
	noise := [][]float64{{1, 0}, {1, 0}, {0, 1}, {0, 1}}
	tests := []struct {
		name   string
		logits [][]float64
		labels []int
		want   float64
	}{
		{"separable", sharp, []int{0, 1, 2}, MinTemperature},
		{"uninformative", noise, []int{0, 1, 0, 1}, MaxTemperature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FitTemperature(tt.logits, tt.labels)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(got-tt.want)/tt.want > 1e-5 {
				t.Errorf("T = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFitTemperatureErrors(t *testing.T) {
	tests := []struct {
		name   string
		logits [][]float64
		labels []int
		want   error
	}{
		{"no samples", nil, nil, ErrEmpty},
		{"length mismatch", [][]float64{{1, 2}}, []int{0, 1}, ErrLengthMismatch},
		{"labels only", nil, []int{0}, ErrLengthMismatch},
		{"empty row", [][]float64{{}}, []int{0}, ErrWidth},
		{"ragged rows", [][]float64{{1, 2}, {1, 2, 3}}, []int{0, 1}, ErrWidth},
		{"negative label", [][]float64{{1, 2}}, []int{-1}, ErrLabelRange},
		{"label too large", [][]float64{{1, 2}}, []int{2}, ErrLabelRange},
		{"NaN logit", [][]float64{{1, math.NaN()}}, []int{0}, ErrNotFinite},
		{"infinite logit", [][]float64{{math.Inf(1), 0}}, []int{0}, ErrNotFinite},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := FitTemperature(tt.logits, tt.labels)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}
