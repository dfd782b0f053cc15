package metrics

import (
	"fmt"
	"math"
	"sort"
)

// DefaultECEBins is the customary number of equal-width confidence bins for
// the expected calibration error (Guo et al. 2017 use 15).
const DefaultECEBins = 15

// probEpsilon is the clamp for log p in the NLL, so a confidently wrong
// prediction of exactly 0 costs -log(1e-12) ≈ 27.6 instead of +Inf.
const probEpsilon = 1e-12

// probTolerance lets a probability exceed 1 by float rounding (a softmax
// computed in float32 and widened) without being rejected.
const probTolerance = 1e-6

// ClassMetrics holds the one-vs-rest scores of one class.
type ClassMetrics struct {
	// Name is the class name, as passed to Evaluate.
	Name string `json:"name"`
	// Precision is TP / (TP + FP): of the samples predicted as this class, the
	// share that truly are. 0 when the class is never predicted.
	Precision float64 `json:"precision"`
	// Recall is TP / (TP + FN): of the samples truly in this class, the share
	// predicted as it. 0 when the class has no support.
	Recall float64 `json:"recall"`
	// F1 is the harmonic mean of Precision and Recall, 2·TP / (2·TP + FP + FN);
	// 0 when both are 0.
	F1 float64 `json:"f1"`
	// Support is the number of samples whose true label is this class.
	Support int `json:"support"`
}

// Report is the evaluation of one set of predictions. All averages are over
// the N samples given to Evaluate.
type Report struct {
	// N is the number of samples.
	N int `json:"n"`
	// Accuracy is the share of samples whose argmax prediction is the label.
	Accuracy float64 `json:"accuracy"`
	// MacroF1 is the unweighted mean of PerClass[k].F1 over every class passed
	// to Evaluate, including classes with no support and classes never
	// predicted (they count as 0): scikit-learn's f1_score(average="macro",
	// labels=range(K), zero_division=0). It is the mean of the per-class F1
	// scores, not the F1 of the mean precision and recall.
	MacroF1 float64 `json:"macro_f1"`
	// WeightedF1 is the mean of PerClass[k].F1 weighted by Support; classes
	// with no support weigh nothing.
	WeightedF1 float64 `json:"weighted_f1"`
	// PerClass holds one entry per class, in class-index order.
	PerClass []ClassMetrics `json:"per_class"`
	// Confusion[t][p] counts samples with true class t predicted as class p.
	Confusion [][]int `json:"confusion"`
	// ECE is the expected calibration error over ECEBins equal-width bins of
	// confidence: Σ_b (|b|/N)·|accuracy(b) − mean confidence(b)|.
	ECE float64 `json:"ece"`
	// ECEBins is the number of bins ECE was computed with.
	ECEBins int `json:"ece_bins"`
	// NLL is the mean negative log-likelihood of the true class,
	// mean(−log max(p_true, 1e-12)), in nats.
	NLL float64 `json:"nll"`
	// MeanConfidence is the mean of the largest probability of each sample.
	MeanConfidence float64 `json:"mean_confidence"`
	// Temperature is the softmax temperature the probabilities were produced
	// with: Evaluate sets 1 (uncalibrated); a caller evaluating the output of
	// Calibrate(logits, T) sets it to T so the report records it.
	Temperature float64 `json:"temperature"`
	// ReviewBelow is the confidence under which predictions should go to a
	// person: the lowest threshold t such that the predictions with
	// confidence ≥ t are right at least ReviewTarget of the time (see
	// ReviewThreshold). `loraft serve` uses the validation report's value as
	// its --review-below default.
	ReviewBelow float64 `json:"review_below"`
	// ReviewTarget is the accuracy ReviewBelow was chosen for.
	ReviewTarget float64 `json:"review_target"`
	// ReviewShare is the share of samples with confidence under ReviewBelow:
	// how much a reviewer would see.
	ReviewShare float64 `json:"review_share"`
}

// DefaultReviewTarget is the accuracy the predictions a service answers on
// its own must reach; the rest go to human review.
const DefaultReviewTarget = 0.9

// ReviewThreshold returns the lowest confidence threshold t such that the
// samples with confidence ≥ t are predicted correctly with accuracy ≥
// target, and the share of samples below it. Raising the threshold past
// the lowest confidences drops the least certain predictions first; when
// no threshold reaches the target (or there are no samples) it returns 1
// with share 1: everything goes to review.
func ReviewThreshold(confidence []float64, correct []bool, target float64) (threshold, share float64) {
	n := len(confidence)
	if n == 0 || len(correct) != n {
		return 1, 1
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return confidence[idx[a]] > confidence[idx[b]] })
	// Walk from the most confident down; the accepted set is a prefix.
	best, bestK := 1.0, 0
	right := 0
	for k, i := range idx {
		if correct[i] {
			right++
		}
		// Only cut between distinct confidences: a threshold accepts all of
		// a tie or none of it.
		if k+1 < n && confidence[idx[k+1]] == confidence[i] {
			continue
		}
		if float64(right) >= target*float64(k+1) {
			best, bestK = confidence[i], k+1
		}
	}
	return best, float64(n-bestK) / float64(n)
}

// Evaluate scores predicted class probabilities against true labels.
//
// labels[i] is the true class of sample i, an index into classNames;
// probs[i] holds its len(classNames) class probabilities (rows need not sum to
// exactly 1, but every entry must be finite and in [0, 1]). The prediction is
// the argmax of probs[i], ties going to the lowest index; the confidence is
// that largest probability.
//
// Per-class precision, recall and F1 use scikit-learn's zero_division=0
// convention: a class never predicted has precision 0, a class with no
// support has recall 0, and F1 is 0 when precision and recall are both 0.
// The macro average runs over all classNames, as scikit-learn does when
// passed labels=range(len(classNames)): a class absent from both labels and
// predictions still counts, with F1 0. (scikit-learn's default, without
// labels, would drop such a class.)
//
// ECE uses eceBins equal-width bins on the confidence: bin i holds
// confidences in [i/B, (i+1)/B), except that a confidence of exactly 1 goes
// in the last bin. Empty bins contribute nothing. DefaultECEBins is the usual
// choice.
//
// Evaluate returns an error wrapping ErrEmpty when there are no samples or no
// classes, ErrLengthMismatch when labels and probs differ in length, ErrWidth
// for a row of the wrong width, ErrLabelRange for a label outside
// [0, len(classNames)), ErrNotFinite for a NaN or infinite probability,
// ErrProbability for one outside [0, 1], and ErrBins when eceBins < 1.
func Evaluate(labels []int, probs [][]float64, classNames []string, eceBins int) (Report, error) {
	k := len(classNames)
	if err := validateEval(labels, probs, k, eceBins); err != nil {
		return Report{}, fmt.Errorf("evaluate: %w", err)
	}
	n := len(labels)

	confusion := make([][]int, k)
	for t := range confusion {
		confusion[t] = make([]int, k)
	}
	binCount := make([]int, eceBins)
	binCorrect := make([]int, eceBins)
	binConf := make([]float64, eceBins)
	var correct int
	var nllSum, confSum float64
	for i, row := range probs {
		pred, conf := argmax(row)
		t := labels[i]
		confusion[t][pred]++
		ok := pred == t
		if ok {
			correct++
		}
		b := confidenceBin(conf, eceBins)
		binCount[b]++
		binConf[b] += conf
		if ok {
			binCorrect[b]++
		}
		confSum += conf
		nllSum -= math.Log(max(row[t], probEpsilon))
	}

	r := Report{
		N:              n,
		Accuracy:       float64(correct) / float64(n),
		PerClass:       make([]ClassMetrics, k),
		Confusion:      confusion,
		ECEBins:        eceBins,
		NLL:            nllSum / float64(n),
		MeanConfidence: confSum / float64(n),
		Temperature:    1,
	}
	for c := range k {
		tp := confusion[c][c]
		var predicted, support int
		for j := range k {
			predicted += confusion[j][c]
			support += confusion[c][j]
		}
		m := ClassMetrics{Name: classNames[c], Support: support}
		m.Precision = ratio(tp, predicted)
		m.Recall = ratio(tp, support)
		// 2·TP / (2·TP + FP + FN) equals 2PR/(P+R) and is exact in integers;
		// its denominator is 0 only when the class is neither true nor
		// predicted anywhere, where zero_division gives 0.
		m.F1 = ratio(2*tp, predicted+support)
		r.PerClass[c] = m
		r.MacroF1 += m.F1
		r.WeightedF1 += m.F1 * float64(support)
	}
	r.MacroF1 /= float64(k)
	r.WeightedF1 /= float64(n)

	for b := range eceBins {
		if binCount[b] == 0 {
			continue
		}
		cnt := float64(binCount[b])
		acc := float64(binCorrect[b]) / cnt
		conf := binConf[b] / cnt
		r.ECE += cnt / float64(n) * math.Abs(acc-conf)
	}

	conf, ok := make([]float64, n), make([]bool, n)
	for i, row := range probs {
		var pred int
		pred, conf[i] = argmax(row)
		ok[i] = pred == labels[i]
	}
	r.ReviewTarget = DefaultReviewTarget
	r.ReviewBelow, r.ReviewShare = ReviewThreshold(conf, ok, r.ReviewTarget)
	return r, nil
}

// validateEval checks Evaluate's arguments; k is the number of classes.
func validateEval(labels []int, probs [][]float64, k, eceBins int) error {
	switch {
	case k == 0:
		return fmt.Errorf("no class names: %w", ErrEmpty)
	case len(labels) == 0 && len(probs) == 0:
		return fmt.Errorf("no samples: %w", ErrEmpty)
	case len(labels) != len(probs):
		return fmt.Errorf("%d labels but %d probability rows: %w", len(labels), len(probs), ErrLengthMismatch)
	case eceBins < 1:
		return fmt.Errorf("%d ECE bins: %w", eceBins, ErrBins)
	}
	for i, row := range probs {
		if len(row) != k {
			return fmt.Errorf("probs row %d has %d columns, want %d: %w", i, len(row), k, ErrWidth)
		}
		if l := labels[i]; l < 0 || l >= k {
			return fmt.Errorf("label %d of sample %d not in [0, %d): %w", l, i, k, ErrLabelRange)
		}
		for j, p := range row {
			if math.IsNaN(p) || math.IsInf(p, 0) {
				return fmt.Errorf("probs[%d][%d] = %v: %w", i, j, p, ErrNotFinite)
			}
			if p < 0 || p > 1+probTolerance {
				return fmt.Errorf("probs[%d][%d] = %v: %w", i, j, p, ErrProbability)
			}
		}
	}
	return nil
}

// argmax returns the index of the largest entry of a non-empty row, the
// lowest such index on ties, and the entry.
func argmax(row []float64) (int, float64) {
	best := 0
	for j := 1; j < len(row); j++ {
		if row[j] > row[best] {
			best = j
		}
	}
	return best, row[best]
}

// confidenceBin returns the ECE bin of a confidence in [0, 1]: bin i covers
// [i/bins, (i+1)/bins) and 1 (or a rounding excess above it) falls in the last.
func confidenceBin(conf float64, bins int) int {
	b := int(math.Floor(conf * float64(bins)))
	return min(max(b, 0), bins-1)
}

// ratio returns num/den, or 0 when den is 0 (scikit-learn's zero_division=0).
func ratio(num, den int) float64 {
	if den == 0 {
		return 0
	}
	return float64(num) / float64(den)
}
