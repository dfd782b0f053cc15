package metrics

import (
	"fmt"
	"math"
)

// The temperature search range of FitTemperature and its tolerance in log T.
const (
	// MinTemperature is the smallest temperature FitTemperature returns.
	MinTemperature = 0.05
	// MaxTemperature is the largest temperature FitTemperature returns.
	MaxTemperature = 20.0
	// temperatureTol is the width of the final log-T bracket.
	temperatureTol = 1e-6
)

// Softmax returns the probabilities softmax(logits/temperature), computed
// stably by subtracting the largest logit before exponentiating, so logits
// like ±1000 neither overflow nor underflow to 0/0.
//
// A logit of +Inf takes all the mass (shared equally among +Inf logits); a
// logit of -Inf gets probability 0, and a row of only -Inf is uniform. A NaN
// logit makes every output NaN. Softmax returns nil when logits is empty or
// temperature is not a positive finite number.
func Softmax(logits []float64, temperature float64) []float64 {
	if len(logits) == 0 || !(temperature > 0) || math.IsInf(temperature, 1) {
		return nil
	}
	out := make([]float64, len(logits))
	m := math.Inf(-1)
	for _, z := range logits {
		if math.IsNaN(z) {
			for j := range out {
				out[j] = math.NaN()
			}
			return out
		}
		m = max(m, z)
	}
	if math.IsInf(m, 0) {
		// All -Inf (uniform) or some +Inf (uniform over those): z-m is NaN.
		var cnt float64
		for j, z := range logits {
			if z == m {
				out[j] = 1
				cnt++
			}
		}
		for j := range out {
			out[j] /= cnt
		}
		return out
	}
	var sum float64
	for j, z := range logits {
		e := math.Exp((z - m) / temperature)
		out[j] = e
		sum += e
	}
	// sum >= 1: the largest logit contributes exp(0).
	for j := range out {
		out[j] /= sum
	}
	return out
}

// Calibrate returns Softmax(logits[i], T) for every row: the temperature-scaled
// probabilities to pass to Evaluate (set the report's Temperature to T). It
// returns nil when T is not a positive finite number.
func Calibrate(logits [][]float64, T float64) [][]float64 {
	if !(T > 0) || math.IsInf(T, 1) {
		return nil
	}
	out := make([][]float64, len(logits))
	for i, row := range logits {
		out[i] = Softmax(row, T)
	}
	return out
}

// FitTemperature fits the temperature-scaling parameter of Guo et al. (2017):
// the T > 0 that minimises the mean negative log-likelihood of
// softmax(logits[i]/T) at labels[i], fitted on held-out (validation) logits.
// T > 1 softens an overconfident model; T < 1 sharpens an underconfident one.
//
// The NLL is convex in 1/T, hence unimodal in log T, so a golden-section
// search over log T in [log MinTemperature, log MaxTemperature] finds the
// minimum; it stops when the bracket is narrower than 1e-6 in log T and
// returns the bracket's midpoint. A minimum outside the range yields the
// nearer bound. The result depends only on the inputs.
//
// All rows must have the same width K ≥ 1 and labels must lie in [0, K).
// FitTemperature returns an error wrapping ErrEmpty, ErrLengthMismatch,
// ErrWidth, ErrLabelRange or ErrNotFinite when they do not.
func FitTemperature(logits [][]float64, labels []int) (float64, error) {
	if err := validateLogits(logits, labels); err != nil {
		return 0, fmt.Errorf("fit temperature: %w", err)
	}
	f := func(logT float64) float64 { return meanNLL(logits, labels, math.Exp(logT)) }

	// Golden-section search for the minimum of a unimodal f on [a, b].
	invPhi := (math.Sqrt(5) - 1) / 2 // 1/φ ≈ 0.618
	a, b := math.Log(MinTemperature), math.Log(MaxTemperature)
	c := b - invPhi*(b-a)
	d := a + invPhi*(b-a)
	fc, fd := f(c), f(d)
	for b-a > temperatureTol {
		if fc < fd {
			b, d, fd = d, c, fc
			c = b - invPhi*(b-a)
			fc = f(c)
		} else {
			a, c, fc = c, d, fd
			d = a + invPhi*(b-a)
			fd = f(d)
		}
	}
	return math.Exp((a + b) / 2), nil
}

// meanNLL returns mean_i −log softmax(logits[i]/T)[labels[i]], computed as
// logsumexp(z/T) − z_y/T so no probability is ever rounded to 0. The
// logsumexp is m/T + log1p(Σ_{j≠argmax} exp((z_j−m)/T)), which keeps the
// tiny losses of confidently right samples (≈ e^−40 at a margin of 40)
// instead of rounding 1 + e^−40 to 1; otherwise the NLL of well-separated
// data would be flat near small T and the search would stop anywhere on it.
func meanNLL(logits [][]float64, labels []int, T float64) float64 {
	var sum float64
	for i, row := range logits {
		top, _ := argmax(row)
		m := row[top]
		var s float64
		for j, z := range row {
			if j != top {
				s += math.Exp((z - m) / T)
			}
		}
		sum += math.Log1p(s) - (row[labels[i]]-m)/T
	}
	return sum / float64(len(logits))
}

// validateLogits checks FitTemperature's arguments.
func validateLogits(logits [][]float64, labels []int) error {
	switch {
	case len(logits) == 0 && len(labels) == 0:
		return fmt.Errorf("no samples: %w", ErrEmpty)
	case len(logits) != len(labels):
		return fmt.Errorf("%d logit rows but %d labels: %w", len(logits), len(labels), ErrLengthMismatch)
	case len(logits[0]) == 0:
		return fmt.Errorf("logits row 0 is empty: %w", ErrWidth)
	}
	k := len(logits[0])
	for i, row := range logits {
		if len(row) != k {
			return fmt.Errorf("logits row %d has %d columns, want %d: %w", i, len(row), k, ErrWidth)
		}
		if l := labels[i]; l < 0 || l >= k {
			return fmt.Errorf("label %d of sample %d not in [0, %d): %w", l, i, k, ErrLabelRange)
		}
		for j, z := range row {
			if math.IsNaN(z) || math.IsInf(z, 0) {
				return fmt.Errorf("logits[%d][%d] = %v: %w", i, j, z, ErrNotFinite)
			}
		}
	}
	return nil
}
