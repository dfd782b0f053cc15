package nf4

import "errors"

// Sentinel errors; failures wrap them with the detail, so compare with
// errors.Is.
var (
	// ErrShape reports a shape that does not describe the data: a negative
	// dimension, or a product of dimensions that differs from the number of
	// values.
	ErrShape = errors.New("shape does not match data")
	// ErrEmpty reports a tensor with no elements.
	ErrEmpty = errors.New("empty tensor")
	// ErrNonFinite reports a NaN or infinite value, which has no NF4 code.
	ErrNonFinite = errors.New("non-finite value")
	// ErrCorrupt reports a Quantized whose fields are inconsistent (lengths
	// that do not match N, DQ fields set without DoubleQuant, ...).
	ErrCorrupt = errors.New("inconsistent quantized tensor")
	// ErrDType reports an output dtype Weight.Dequantize cannot produce.
	ErrDType = errors.New("unsupported dtype")
	// ErrDropped reports use of a Weight after Drop.
	ErrDropped = errors.New("weight already dropped")
)
