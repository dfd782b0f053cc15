package nf4

import (
	"fmt"
	"math"
	"slices"
)

// Quantized is a tensor in NF4 form, optionally with double-quantized absmax.
// Quantize makes one; the fields are exported so that it can be stored and
// read back (Validate checks one that came from elsewhere).
type Quantized struct {
	// Shape is the tensor's shape; N is the product of its dimensions.
	Shape []int64
	N     int
	// Packed holds the NF4 codes, two per byte: byte j is q[2j]<<4 | q[2j+1].
	// An odd N pads the last low nibble with the code of 0.0 (7), as
	// bitsandbytes does. len(Packed) = (N+1)/2.
	Packed []byte
	// Absmax is the fp32 absmax of each block of BlockSize elements
	// (ceil(N/BlockSize) of them); nil when DoubleQuant is set.
	Absmax []float32
	// DoubleQuant reports that the absmax vector is stored in the next three
	// fields instead of Absmax.
	DoubleQuant bool
	// AbsmaxCodes holds one DynamicMap index per block.
	AbsmaxCodes []uint8
	// AbsmaxScales holds one fp32 scale per AbsmaxBlockSize absmax codes.
	AbsmaxScales []float32
	// AbsmaxOffset is the mean of the absmax vector, added back on
	// dequantization: absmax[b] = DynamicMap[AbsmaxCodes[b]] *
	// AbsmaxScales[b/AbsmaxBlockSize] + AbsmaxOffset, in float32.
	AbsmaxOffset float32
}

// Quantize converts x, a tensor of the given shape in row-major order, to NF4
// with blocks of BlockSize, and with doubleQuant also compresses the absmax
// vector. It fails when the shape does not describe x or has no dimensions,
// when x is empty, or when x holds a NaN or an infinity.
//
// It reproduces bitsandbytes' quantize_4bit(quant_type="nf4", blocksize=64,
// compress_statistics=doubleQuant) code for code, with two exceptions where
// bitsandbytes divides by zero: a block whose values are all zero (absmax 0)
// gets the code of 0.0 (7) for every element, and a DQ block of 256 absmax
// values that all equal the mean gets the map index of 0.0; bitsandbytes
// produces code 0 in both cases (NaN through its comparisons). The values
// dequantize the same, except that a zero block under DQ, whose absmax is
// only reconstructed approximately, stays exactly zero here. A block whose
// absmax is so small (subnormal) that its fp32 reciprocal overflows is
// divided by the absmax instead of multiplied by the reciprocal, where
// bitsandbytes would produce infinities. The offset is the mean computed in
// float64 and rounded to float32; torch's float32 reduction may differ in the
// last bit.
func Quantize(x []float32, shape []int64, doubleQuant bool) (*Quantized, error) {
	n, err := numel(shape)
	if err != nil {
		return nil, fmt.Errorf("nf4 quantize: %w", err)
	}
	if n != int64(len(x)) {
		return nil, fmt.Errorf("nf4 quantize: %w: shape %v has %d elements, data has %d", ErrShape, shape, n, len(x))
	}
	if n == 0 {
		return nil, fmt.Errorf("nf4 quantize: %w: shape %v", ErrEmpty, shape)
	}
	for i, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("nf4 quantize: %w: element %d is %v", ErrNonFinite, i, v)
		}
	}

	absmax, codes := quantizeBlocks(x, BlockSize, quantizeNF4, zeroCode)
	q := &Quantized{
		Shape:       slices.Clone(shape),
		N:           len(x),
		Packed:      pack(codes),
		DoubleQuant: doubleQuant,
	}
	if !doubleQuant {
		q.Absmax = absmax
		return q, nil
	}

	var sum float64
	for _, a := range absmax {
		sum += float64(a)
	}
	q.AbsmaxOffset = float32(sum / float64(len(absmax)))
	centred := make([]float32, len(absmax))
	for i, a := range absmax {
		centred[i] = a - q.AbsmaxOffset
	}
	q.AbsmaxScales, q.AbsmaxCodes = quantizeBlocks(centred, AbsmaxBlockSize, quantizeDynamic, dynamicZeroCode)
	return q, nil
}

// quantizeBlocks cuts x into blocks of size, and returns each block's absmax
// and each element's code: quant(x * (1/absmax)) in float32 like the CUDA
// kernel. An all-zero block gets zero for every element. When 1/absmax
// overflows (a subnormal absmax) the element is divided instead.
func quantizeBlocks(x []float32, size int, quant func(float32) uint8, zero uint8) (absmax []float32, codes []uint8) {
	nBlocks := (len(x) + size - 1) / size
	absmax = make([]float32, nBlocks)
	codes = make([]uint8, len(x))
	for b := range absmax {
		block := x[b*size : min((b+1)*size, len(x))]
		out := codes[b*size : b*size+len(block)]
		var am float32
		for _, v := range block {
			am = max(am, float32(math.Abs(float64(v))))
		}
		absmax[b] = am
		switch rcp := 1 / am; {
		case am == 0:
			for i := range out {
				out[i] = zero
			}
		case math.IsInf(float64(rcp), 0):
			for i, v := range block {
				out[i] = quant(v / am)
			}
		default:
			for i, v := range block {
				out[i] = quant(v * rcp)
			}
		}
	}
	return absmax, codes
}

// pack puts two codes in a byte, the first in the high nibble, padding an odd
// count with the code of 0.0.
func pack(codes []uint8) []byte {
	packed := make([]byte, (len(codes)+1)/2)
	for j := range packed {
		lo := uint8(zeroCode)
		if 2*j+1 < len(codes) {
			lo = codes[2*j+1]
		}
		packed[j] = codes[2*j]<<4 | lo
	}
	return packed
}

// numel is the product of shape's dimensions, or an error for a scalar (no
// dimensions; gotch cannot reshape to one), a negative dimension or an
// overflow.
func numel(shape []int64) (int64, error) {
	if len(shape) == 0 {
		return 0, fmt.Errorf("%w: no dimensions", ErrShape)
	}
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("%w: negative dimension in %v", ErrShape, shape)
		}
		if d != 0 && n > math.MaxInt64/d {
			return 0, fmt.Errorf("%w: %v has too many elements", ErrShape, shape)
		}
		n *= d
	}
	return n, nil
}

// Validate checks that q's fields are consistent with each other, as Quantize
// leaves them: lengths that match N and Shape, the DQ fields set exactly when
// DoubleQuant is, and finite absmax statistics.
func (q *Quantized) Validate() error {
	if q == nil {
		return fmt.Errorf("nf4: %w: nil", ErrCorrupt)
	}
	n, err := numel(q.Shape)
	if err != nil {
		return fmt.Errorf("nf4: %w", err)
	}
	if n != int64(q.N) || q.N <= 0 {
		return fmt.Errorf("nf4: %w: N is %d, shape %v", ErrCorrupt, q.N, q.Shape)
	}
	if want := (q.N + 1) / 2; len(q.Packed) != want {
		return fmt.Errorf("nf4: %w: %d packed bytes, want %d", ErrCorrupt, len(q.Packed), want)
	}
	nBlocks := (q.N + BlockSize - 1) / BlockSize
	if !q.DoubleQuant {
		if len(q.Absmax) != nBlocks || q.AbsmaxCodes != nil || q.AbsmaxScales != nil {
			return fmt.Errorf("nf4: %w: %d absmax, %d absmax codes, %d scales without double quantization, want %d absmax",
				ErrCorrupt, len(q.Absmax), len(q.AbsmaxCodes), len(q.AbsmaxScales), nBlocks)
		}
		return finite("absmax", q.Absmax)
	}
	nScales := (nBlocks + AbsmaxBlockSize - 1) / AbsmaxBlockSize
	if q.Absmax != nil || len(q.AbsmaxCodes) != nBlocks || len(q.AbsmaxScales) != nScales {
		return fmt.Errorf("nf4: %w: %d absmax, %d absmax codes, %d scales with double quantization, want 0, %d, %d",
			ErrCorrupt, len(q.Absmax), len(q.AbsmaxCodes), len(q.AbsmaxScales), nBlocks, nScales)
	}
	if err := finite("absmax offset", []float32{q.AbsmaxOffset}); err != nil {
		return err
	}
	return finite("absmax scale", q.AbsmaxScales)
}

func finite(what string, v []float32) error {
	for i, a := range v {
		if math.IsNaN(float64(a)) || math.IsInf(float64(a), 0) {
			return fmt.Errorf("nf4: %w: %s %d is %v", ErrCorrupt, what, i, a)
		}
	}
	return nil
}

// blockAbsmax returns the absmax of every block, reconstructing it from the
// DQ codes when q is double-quantized. q must be valid.
func (q *Quantized) blockAbsmax() []float32 {
	if !q.DoubleQuant {
		return q.Absmax
	}
	absmax := make([]float32, len(q.AbsmaxCodes))
	for b, c := range q.AbsmaxCodes {
		// Explicit conversions round each step to float32 (no fused
		// multiply-add), as the tensor ops in Weight.Dequantize do.
		absmax[b] = float32(dynamicMap[c]*q.AbsmaxScales[b/AbsmaxBlockSize]) + q.AbsmaxOffset
	}
	return absmax
}

// Dequantize rebuilds the tensor in row-major order (the pure-Go reference):
// element i is Codebook[code_i] * absmax[i/BlockSize] in float32, with absmax
// first reconstructed from its codes under double quantization. It fails only
// when q is inconsistent (see Validate).
func (q *Quantized) Dequantize() ([]float32, error) {
	if err := q.Validate(); err != nil {
		return nil, fmt.Errorf("nf4 dequantize: %w", err)
	}
	absmax := q.blockAbsmax()
	out := make([]float32, q.N)
	for i := range out {
		c := q.Packed[i/2]
		if i%2 == 0 {
			c >>= 4
		}
		out[i] = codebook[c&0xF] * absmax[i/BlockSize]
	}
	return out, nil
}

// StoredBytes is the size of q's quantized state: the packed codes plus the
// absmax statistics (4 bytes per absmax; or 1 byte per absmax code, 4 per
// scale and 4 for the offset with double quantization). The shared constant
// tables (Codebook, DynamicMap) are not counted, as in bitsandbytes' figures.
func (q *Quantized) StoredBytes() int {
	b := len(q.Packed) + 4*len(q.Absmax) + len(q.AbsmaxCodes) + 4*len(q.AbsmaxScales)
	if q.DoubleQuant {
		b += 4
	}
	return b
}

// BitsPerParam is StoredBytes in bits per element: 4.5 without double
// quantization (4 + 32/64), about 4.127 with it for large tensors
// (4 + 8/64 + 32/(64*256)).
func (q *Quantized) BitsPerParam() float64 {
	if q.N == 0 {
		return 0
	}
	return float64(q.StoredBytes()) * 8 / float64(q.N)
}
