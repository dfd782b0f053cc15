package allreduce

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
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

// TestAddIntoMatchesScalar checks addInto, on every path (vector body, tail,
// unaligned bytes), against float32 additions one at a time, bit for bit:
// infinities, subnormals and signed zeros included. A sum with a NaN operand
// must be that operand, quieted; with two, either (Go itself may swap the
// operands of +). The reduced bits reach every rank unchanged either way:
// each sum is computed once, on one rank.
func TestAddIntoMatchesScalar(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	special := []uint32{0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00001, 0xffa00002, 0x00000001, 0x807fffff, 0x7f7fffff}
	val := func() uint32 {
		if rng.IntN(4) == 0 {
			return special[rng.IntN(len(special))]
		}
		return rng.Uint32()
	}
	for n := range 70 {
		for _, shift := range []int{0, 1} { // shift 1: b is not float32-aligned
			dst := make([]float32, n)
			raw := make([]byte, 4*n+shift)
			b := raw[shift:]
			in := make([][2]uint32, n)
			for i := range n {
				in[i] = [2]uint32{val(), val()}
				dst[i] = math.Float32frombits(in[i][0])
				binary.LittleEndian.PutUint32(b[4*i:], in[i][1])
			}
			addInto(dst, b)
			for i := range n {
				x, y := math.Float32frombits(in[i][0]), math.Float32frombits(in[i][1])
				ok := func(got uint32) bool {
					const quiet = 0x00400000
					switch xn, yn := x != x, y != y; {
					case xn && yn:
						return got == in[i][0]|quiet || got == in[i][1]|quiet
					case xn:
						return got == in[i][0]|quiet
					case yn:
						return got == in[i][1]|quiet
					}
					return got == math.Float32bits(x+y)
				}
				if got := math.Float32bits(dst[i]); !ok(got) {
					t.Fatalf("n %d shift %d: %#08x + %#08x gave dst %#08x, want %#08x", n, shift, in[i][0], in[i][1], got, math.Float32bits(x+y))
				}
				if got := binary.LittleEndian.Uint32(b[4*i:]); got != math.Float32bits(dst[i]) {
					t.Fatalf("n %d shift %d: forwarded[%d] = %#08x, dst %#08x", n, shift, i, got, math.Float32bits(dst[i]))
				}
			}
		}
	}
}
