// Package metrics scores a multi-class text classifier — loraft's first job is
// the 7-class mental-health classifier — and calibrates its confidence scores.
//
// Evaluate turns true labels and predicted class probabilities into a Report:
// accuracy, per-class precision, recall and F1 with their macro and
// support-weighted averages, the confusion matrix, the expected calibration
// error (ECE), the negative log-likelihood (NLL) and the mean confidence. The
// counting conventions follow scikit-learn's classification_report with
// labels=range(len(classNames)) and zero_division=0, so the numbers can be
// checked against it.
//
// FitTemperature and Calibrate implement temperature scaling (Guo et al.,
// "On Calibration of Modern Neural Networks", 2017): one scalar T > 0 divides
// every logit before the softmax, chosen to minimise the NLL on held-out data.
// It changes confidences but never the argmax, so accuracy and F1 are
// unchanged while ECE and NLL usually drop.
//
// Report renders itself as aligned plain text (Table, ConfusionTable) and as
// Markdown for a model card (MarkdownTable); it also marshals to JSON with
// snake_case keys.
//
// Everything here is pure Go, deterministic, and free of tensors: inputs are
// plain float64 slices copied off the device by the caller.
package metrics
