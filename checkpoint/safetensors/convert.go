package safetensors

import "math"

// f16ToFloat32 converts an IEEE 754 binary16 bit pattern to float32. Every
// binary16 value, subnormals included, is exactly representable in float32;
// infinities keep their sign and NaNs keep sign and payload (quieted by the
// shift into the float32 mantissa's top bits).
func f16ToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch exp {
	case 0:
		// Zero or subnormal: mant × 2⁻²⁴, exact in float32.
		v := float32(mant) * (1.0 / (1 << 24))
		return math.Float32frombits(sign | math.Float32bits(v))
	case 0x1f:
		// Infinity (mant == 0) or NaN.
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	default:
		// Normal: rebias the exponent from 15 to 127.
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	}
}

// bf16ToFloat32 converts a bfloat16 bit pattern to float32: bfloat16 is the
// top 16 bits of a float32, so this is exact for every value.
func bf16ToFloat32(b uint16) float32 {
	return math.Float32frombits(uint32(b) << 16)
}

// float32ToBF16 rounds f to the nearest bfloat16, ties to even, as PyTorch's
// c10::BFloat16 does: values past the largest bfloat16 round to infinity and
// every NaN becomes the canonical quiet NaN 0x7FC0.
func float32ToBF16(f float32) uint16 {
	if f != f {
		return 0x7fc0
	}
	u := math.Float32bits(f)
	bias := uint32(0x7fff) + (u>>16)&1
	return uint16((u + bias) >> 16)
}
