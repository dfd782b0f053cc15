package metrics_test

import (
	"fmt"

	"github.com/loraft/loraft/trainer/metrics"
)

// Fit a temperature on validation logits, then evaluate calibrated
// probabilities and record the temperature in the report.
func Example() {
	names := []string{"Normal", "Depression", "Anxiety"}
	logits := [][]float64{
		{4, 0, 0}, {0, 4, 0}, {0, 0, 4}, {4, 0, 0},
		{0, 4, 0}, {4, 0, 0}, {0, 0, 4}, {0, 4, 0},
	}
	labels := []int{0, 1, 2, 1, 1, 2, 2, 0} // 5 of 8 right: the model is overconfident

	T, err := metrics.FitTemperature(logits, labels)
	if err != nil {
		fmt.Println(err)
		return
	}
	r, err := metrics.Evaluate(labels, metrics.Calibrate(logits, T), names, metrics.DefaultECEBins)
	if err != nil {
		fmt.Println(err)
		return
	}
	r.Temperature = T
	// The NLL is least when the confidence e^(4/T)/(e^(4/T)+2) equals the
	// accuracy 5/8: e^(4/T) = 10/3, T = 4/ln(10/3) ≈ 3.322.
	fmt.Printf("T=%.3f accuracy=%.3f confidence=%.3f ECE=%.3f\n", r.Temperature, r.Accuracy, r.MeanConfidence, r.ECE)
	// Output:
	// T=3.322 accuracy=0.625 confidence=0.625 ECE=0.000
}
