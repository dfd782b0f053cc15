package metrics

import "errors"

// Sentinel errors; every error returned by this package wraps one of them
// (compare with errors.Is) and names the function and the offending row.
var (
	// ErrEmpty: no samples, or no classes.
	ErrEmpty = errors.New("empty input")
	// ErrLengthMismatch: labels and rows of scores differ in number.
	ErrLengthMismatch = errors.New("length mismatch")
	// ErrWidth: a row of probabilities or logits has the wrong number of classes.
	ErrWidth = errors.New("wrong number of classes in row")
	// ErrLabelRange: a label is negative or not below the number of classes.
	ErrLabelRange = errors.New("label out of range")
	// ErrNotFinite: a probability or logit is NaN or infinite.
	ErrNotFinite = errors.New("value not finite")
	// ErrProbability: a probability is finite but outside [0, 1].
	ErrProbability = errors.New("probability outside [0, 1]")
	// ErrBins: the number of ECE bins is less than one.
	ErrBins = errors.New("ECE bin count must be at least 1")
)
