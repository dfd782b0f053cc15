package allreduce

import (
	"encoding/binary"
	"math"
	"testing"
)

// TestCodecBits checks that values cross the wire as little-endian bits,
// unchanged, including NaN payloads, infinities and negative zero.
func TestCodecBits(t *testing.T) {
	vals := []float32{0, float32(math.Copysign(0, -1)), 1, -2.5, math.MaxFloat32, math.SmallestNonzeroFloat32,
		float32(math.Inf(1)), math.Float32frombits(0x7fc00123), math.Float32frombits(0xffbfffff)}
	b := encode(vals)
	for i, v := range vals {
		if got := binary.LittleEndian.Uint32(b[4*i:]); got != math.Float32bits(v) {
			t.Fatalf("encode[%d] = %#08x, want %#08x", i, got, math.Float32bits(v))
		}
	}
	back := make([]float32, len(vals))
	decodeInto(back, b)
	for i := range vals {
		if math.Float32bits(back[i]) != math.Float32bits(vals[i]) {
			t.Fatalf("decodeInto[%d] = %#08x, want %#08x", i, math.Float32bits(back[i]), math.Float32bits(vals[i]))
		}
	}

	dst := []float32{1, 2, 0.1}
	in := encode([]float32{3, -2, 0.2})
	addInto(dst, in)
	want := []float32{4, 0, float32(0.1) + float32(0.2)}
	for i := range want {
		if dst[i] != want[i] || binary.LittleEndian.Uint32(in[4*i:]) != math.Float32bits(want[i]) {
			t.Fatalf("addInto[%d]: dst %v, forwarded %#08x, want %v", i, dst[i], binary.LittleEndian.Uint32(in[4*i:]), want[i])
		}
	}
}
