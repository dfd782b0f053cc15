package safetensors

import (
	"math"
	"testing"
)

// Bit patterns computed by hand from the IEEE 754 binary16 and bfloat16
// layouts (sign, exponent bias 15 or 127, mantissa 10 or 7 bits).
func TestF16ToFloat32(t *testing.T) {
	for _, c := range []struct {
		bits uint16
		want float32
	}{
		{0x3c00, 1.0},
		{0xc100, -2.5},                   // -1.25 × 2¹
		{0x7bff, 65504},                  // largest finite: (2 − 2⁻¹⁰) × 2¹⁵
		{0x0001, 5.960464477539063e-08},  // smallest subnormal: 2⁻²⁴
		{0x03ff, 6.097555160522461e-05},  // largest subnormal: 1023 × 2⁻²⁴
		{0x0400, 6.103515625e-05},        // smallest normal: 2⁻¹⁴
		{0x8001, -5.960464477539063e-08}, // negative subnormal
		{0x3555, 0.333251953125},         // 1365/4096
		{0x0000, 0},
		{0x7c00, float32(math.Inf(1))},
		{0xfc00, float32(math.Inf(-1))},
	} {
		got := f16ToFloat32(c.bits)
		if math.Float32bits(got) != math.Float32bits(c.want) {
			t.Errorf("f16ToFloat32(%#04x) = %g (%#08x), want %g (%#08x)", c.bits, got, math.Float32bits(got), c.want, math.Float32bits(c.want))
		}
	}
	if got := f16ToFloat32(0x8000); got != 0 || !math.Signbit(float64(got)) {
		t.Errorf("f16ToFloat32(0x8000) = %g, want -0", got)
	}
	for _, nan := range []uint16{0x7e00, 0x7c01, 0xfe00, 0x7fff} {
		got := f16ToFloat32(nan)
		if got == got {
			t.Errorf("f16ToFloat32(%#04x) = %g, want NaN", nan, got)
		}
		if math.Signbit(float64(got)) != (nan&0x8000 != 0) {
			t.Errorf("f16ToFloat32(%#04x) lost the sign", nan)
		}
	}
}

// TestF16AllValues checks every finite binary16 pattern against the value
// its fields define, computed with float64 arithmetic.
func TestF16AllValues(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		exp := int(h>>10) & 0x1f
		mant := float64(h & 0x3ff)
		if exp == 0x1f {
			continue // inf and NaN are covered above
		}
		var want float64
		if exp == 0 {
			want = math.Ldexp(mant, -24)
		} else {
			want = math.Ldexp(1+mant/1024, exp-15)
		}
		if h&0x8000 != 0 {
			want = -want
		}
		if got := f16ToFloat32(h); float64(got) != want || math.Signbit(float64(got)) != (h&0x8000 != 0) {
			t.Fatalf("f16ToFloat32(%#04x) = %g, want %g", h, got, want)
		}
	}
}

func TestBF16ToFloat32(t *testing.T) {
	for _, c := range []struct {
		bits uint16
		want uint32 // float32 bits
	}{
		{0x3f80, 0x3f800000}, // 1.0
		{0xc020, 0xc0200000}, // -2.5
		{0x477f, 0x477f0000}, // 65280, the bfloat16 below 65504
		{0x4780, 0x47800000}, // 65536
		{0x0001, 0x00010000}, // smallest subnormal, 2⁻¹³³
		{0x7f80, 0x7f800000}, // +inf
		{0xff80, 0xff800000}, // -inf
		{0x7fc0, 0x7fc00000}, // NaN
	} {
		if got := math.Float32bits(bf16ToFloat32(c.bits)); got != c.want {
			t.Errorf("bf16ToFloat32(%#04x) = %#08x, want %#08x", c.bits, got, c.want)
		}
	}
	if got := bf16ToFloat32(0x0001); got != float32(math.Ldexp(1, -133)) {
		t.Errorf("bf16ToFloat32(0x0001) = %g, want 2⁻¹³³", got)
	}
}

func TestFloat32ToBF16(t *testing.T) {
	for _, c := range []struct {
		in   uint32 // float32 bits
		want uint16
	}{
		{0x3f800000, 0x3f80}, // 1.0
		{0xc0200000, 0xc020}, // -2.5
		{0x477fe000, 0x4780}, // 65504 rounds up to 65536 (low half 0xe000 > 0x8000)
		{0x00000001, 0x0000}, // smallest float32 subnormal rounds to 0
		{0x00010000, 0x0001}, // smallest bfloat16 subnormal is exact
		{0x3f808000, 0x3f80}, // tie, even below: stays
		{0x3f818000, 0x3f82}, // tie, odd below: rounds up to even
		{0x3f808001, 0x3f81}, // just above the tie: up
		{0x3f807fff, 0x3f80}, // just below the tie: down
		{0x7f7fffff, 0x7f80}, // largest float32 rounds to +inf
		{0xff7fffff, 0xff80}, // and its negative to -inf
		{0x7f800000, 0x7f80}, // +inf
		{0xff800000, 0xff80}, // -inf
		{0x7fc00000, 0x7fc0}, // NaN
		{0xffc00001, 0x7fc0}, // negative NaN with payload: canonical NaN
		{0x7f800001, 0x7fc0}, // signalling NaN that truncation would turn into inf
		{0x80000000, 0x8000}, // -0
	} {
		if got := float32ToBF16(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("float32ToBF16(%#08x) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
}

// TestBF16RoundTripAll checks that every non-NaN bfloat16 survives the trip
// through float32 unchanged.
func TestBF16RoundTripAll(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		b := uint16(i)
		f := bf16ToFloat32(b)
		if f != f {
			continue
		}
		if got := float32ToBF16(f); got != b {
			t.Fatalf("bfloat16 %#04x → %g → %#04x", b, f, got)
		}
	}
}
