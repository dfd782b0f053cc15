package nf4

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// randomWeights returns n values drawn from N(0, std²), like a Linear layer's
// weights, with a few outliers so that block absmaxes vary.
func randomWeights(n int, std float64, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 7))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * std)
		if rng.IntN(500) == 0 {
			x[i] *= 8
		}
	}
	return x
}

func mustQuantize(t testing.TB, x []float32, shape []int64, dq bool) *Quantized {
	t.Helper()
	q, err := Quantize(x, shape, dq)
	if err != nil {
		t.Fatalf("Quantize(shape %v, doubleQuant %v): %v", shape, dq, err)
	}
	return q
}

func mustDequantize(t testing.TB, q *Quantized) []float32 {
	t.Helper()
	out, err := q.Dequantize()
	if err != nil {
		t.Fatalf("Dequantize: %v", err)
	}
	return out
}

// codes unpacks q's NF4 codes.
func codes(q *Quantized) []uint8 {
	c := make([]uint8, q.N)
	for i := range c {
		c[i] = q.Packed[i/2] >> (4 * (1 - i%2)) & 0xF
	}
	return c
}

func TestQuantizeErrors(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(-1))
	for _, c := range []struct {
		name  string
		x     []float32
		shape []int64
		want  error
	}{
		{"fewer values than shape", []float32{1, 2, 3}, []int64{2, 2}, ErrShape},
		{"more values than shape", []float32{1, 2, 3, 4, 5}, []int64{2, 2}, ErrShape},
		{"negative dimension", []float32{1, 2}, []int64{-1, -2}, ErrShape},
		{"overflowing shape", []float32{1}, []int64{1 << 40, 1 << 40}, ErrShape},
		{"scalar", []float32{1}, nil, ErrShape},
		{"empty", nil, []int64{0, 5}, ErrEmpty},
		{"NaN", []float32{1, nan}, []int64{2}, ErrNonFinite},
		{"infinity", []float32{inf, 1}, []int64{2}, ErrNonFinite},
	} {
		for _, dq := range []bool{false, true} {
			q, err := Quantize(c.x, c.shape, dq)
			if !errors.Is(err, c.want) || q != nil {
				t.Errorf("%s (doubleQuant %v): got %v, %v; want error %v", c.name, dq, q, err, c.want)
			}
		}
	}
}

// TestPacking checks nibble order on inputs whose codes are known (absmax 1):
// byte j = q[2j]<<4 | q[2j+1], and an odd count pads the low nibble with the
// code of 0.0 (7), since bitsandbytes quantizes the padding as 0.0.
func TestPacking(t *testing.T) {
	for _, c := range []struct {
		name  string
		x     []float32
		codes []uint8
		want  []byte
	}{
		// -1 -> 0, 1 -> 15, 0 -> 7, 0.5 -> 12 (0.5 <= threshold 0.5017 of 12|13)
		{"four", []float32{-1, 1, 0, 0.5}, []uint8{0, 15, 7, 12}, []byte{0x0F, 0x7C}},
		// 0.25 -> 10 (below 0.2920 of 10|11), -1 -> 0, 1 -> 15, padding 7
		{"three", []float32{0.25, -1, 1}, []uint8{10, 0, 15}, []byte{0xA0, 0xF7}},
		{"one", []float32{0.3}, []uint8{15}, []byte{0xF7}}, // alone it is its absmax: 1 -> 15
	} {
		q := mustQuantize(t, c.x, []int64{int64(len(c.x))}, false)
		if !bytes.Equal(q.Packed, c.want) {
			t.Errorf("%s: packed %#x, want %#x", c.name, q.Packed, c.want)
		}
		if got := codes(q); !slices.Equal(got, c.codes) {
			t.Errorf("%s: codes %v, want %v", c.name, got, c.codes)
		}
	}
}

// TestShortLastBlock: 67 elements make a full block and a 3-element block,
// which gets its own absmax.
func TestShortLastBlock(t *testing.T) {
	x := make([]float32, 67)
	for i := range 64 {
		x[i] = float32(i%9) - 4 // absmax 4
	}
	x[64], x[65], x[66] = 0.5, -0.25, 0.125 // absmax 0.5; normalised 1, -0.5, 0.25
	for _, dq := range []bool{false, true} {
		q := mustQuantize(t, x, []int64{67}, dq)
		absmax := q.blockAbsmax()
		if len(absmax) != 2 {
			t.Fatalf("doubleQuant %v: %d absmax values, want 2", dq, len(absmax))
		}
		if !dq && (absmax[0] != 4 || absmax[1] != 0.5) {
			t.Errorf("absmax %v, want [4 0.5]", absmax)
		}
		// -0.5 is between codes 2 (-0.525) and 3 (-0.395), nearer 2.
		if got := codes(q)[64:]; !slices.Equal(got, []uint8{15, 2, 10}) {
			t.Errorf("doubleQuant %v: last block codes %v, want [15 2 10]", dq, got)
		}
		if got := q.Packed[33]; got != 0xA7 {
			t.Errorf("doubleQuant %v: last byte %#x, want 0xa7 (code 10, padding 7)", dq, got)
		}
	}
}

// TestZeroBlock: an all-zero block has absmax 0 and code 7 everywhere, and
// dequantizes to exactly zero, also with double quantization (where its
// absmax comes back only approximately).
func TestZeroBlock(t *testing.T) {
	x := make([]float32, 3*64)
	for i := 64; i < 128; i++ {
		x[i] = float32(i) / 100
	}
	x[130] = -1
	for _, dq := range []bool{false, true} {
		q := mustQuantize(t, x, []int64{3, 64}, dq)
		if !dq && (q.Absmax[0] != 0 || q.Absmax[2] != 1) {
			t.Errorf("absmax %v, want 0 for block 0 and 1 for block 2", q.Absmax)
		}
		for i, c := range codes(q) {
			if x[i] == 0 && c != zeroCode {
				t.Errorf("doubleQuant %v: zero element %d has code %d, want 7", dq, i, c)
			}
		}
		out := mustDequantize(t, q)
		for i := range 64 {
			if out[i] != 0 {
				t.Errorf("doubleQuant %v: element %d of the zero block dequantizes to %v", dq, i, out[i])
			}
		}
	}
}

// Round-trip bounds.
//
// Plain: element x in a block with absmax A is normalised to x/A in [-1, 1]
// and replaced by the nearest code, so |x - deq(x)| <= g4/2 * A, where g4 is
// the largest gap between adjacent codes (0.3038, between -1 and
// -0.6962). The reciprocal multiply and the final product add a few float32
// roundings: slack 1e-6 * A.
//
// Double quantization changes only A: deq(x) = c * A' with |c| <= 1, so
// |x - deq(x)| <= g4/2 * A + |A - A'|. A' = m[k] * s + offset where the
// centred absmax A - offset, divided by its 256-block's scale s (the block's
// largest |A - offset|), lies in [-1, 1] and is replaced by the nearest map
// value, so |A - A'| <= e8 * s, with e8 half the largest gap between adjacent
// map values, or the distance from -1 to the smallest map value (-0.99297)
// if larger: e8 = 0.0070313. Slack: 1e-6 * (s + |A| + |offset|).

// g4Half is half the largest gap between adjacent NF4 codes.
func g4Half() float64 {
	var g float64
	for k := 0; k+1 < 16; k++ {
		g = max(g, float64(codebook[k+1])-float64(codebook[k]))
	}
	return g / 2
}

// e8 bounds the error of the 8-bit dynamic quantization of a value in [-1, 1].
func e8() float64 {
	m := DynamicMap()
	e := max(float64(m[0])+1, 1-float64(m[255]))
	for k := 0; k+1 < len(m); k++ {
		e = max(e, (float64(m[k+1])-float64(m[k]))/2)
	}
	return e
}

func TestBoundConstants(t *testing.T) {
	if g := g4Half(); math.Abs(g-0.3038071990013123/2) > 1e-9 {
		t.Errorf("half the largest NF4 gap = %v, want 0.1519036 (codes 0|1)", g)
	}
	if e := e8(); math.Abs(e-0.00703126) > 1e-7 {
		t.Errorf("dynamic-map error bound = %v, want 0.0070313", e)
	}
}

var roundTripShapes = [][]int64{
	{768, 768}, // BERT attention projection
	{3072, 40}, // 1920 blocks: 7.5 absmax blocks of 256
	{1000},     // short last block (40 elements)
	{7, 9},     // odd count, single short block
	{1},
	{129},
}

func TestRoundTripPlain(t *testing.T) {
	g := g4Half()
	for si, shape := range roundTripShapes {
		n := int(shape[0])
		if len(shape) == 2 {
			n *= int(shape[1])
		}
		x := randomWeights(n, 0.02, uint64(si))
		q := mustQuantize(t, x, shape, false)
		out := mustDequantize(t, q)
		c := codes(q)
		worst := 0.0
		for i, v := range x {
			a := float64(q.Absmax[i/BlockSize])
			err := math.Abs(float64(v) - float64(out[i]))
			if err > g*a+1e-6*a {
				t.Fatalf("shape %v element %d: |%v - %v| = %v > %v * absmax %v", shape, i, v, out[i], err, g, a)
			}
			worst = max(worst, err/a)
			// The code is a nearest one to x/absmax.
			xn := float64(v) / a
			d := math.Abs(xn - float64(codebook[c[i]]))
			for k, cv := range codebook {
				if dk := math.Abs(xn - float64(cv)); dk < d-1e-6 {
					t.Fatalf("shape %v element %d: x/absmax %v has code %d, code %d is nearer", shape, i, xn, c[i], k)
				}
			}
		}
		t.Logf("shape %v: worst |x - deq| / absmax = %.4f (bound %.4f)", shape, worst, g)
	}
}

func TestRoundTripDoubleQuant(t *testing.T) {
	g, e := g4Half(), e8()
	for si, shape := range roundTripShapes {
		n := int(shape[0])
		if len(shape) == 2 {
			n *= int(shape[1])
		}
		x := randomWeights(n, 0.02, uint64(si))
		plain := mustQuantize(t, x, shape, false)
		q := mustQuantize(t, x, shape, true)
		if !bytes.Equal(q.Packed, plain.Packed) {
			t.Errorf("shape %v: double quantization changed the NF4 codes", shape)
		}
		if q.Absmax != nil {
			t.Errorf("shape %v: Absmax kept with double quantization", shape)
		}
		out := mustDequantize(t, q)
		deqAbsmax := q.blockAbsmax()
		for i, v := range x {
			b := i / BlockSize
			a := float64(plain.Absmax[b])
			s := float64(q.AbsmaxScales[b/AbsmaxBlockSize])
			bound := g*a + e*s + 1e-6*(s+a+math.Abs(float64(q.AbsmaxOffset)))
			if err := math.Abs(float64(v) - float64(out[i])); err > bound {
				t.Fatalf("shape %v element %d: |%v - %v| = %v > %v (absmax %v -> %v, scale %v)",
					shape, i, v, out[i], err, bound, a, deqAbsmax[b], s)
			}
		}
	}
}

// TestDoubleQuantAbsmax checks the DQ statistics themselves: the offset is
// the mean absmax, each scale is its 256-block's largest |absmax - offset|,
// and every absmax comes back within e8 * scale.
func TestDoubleQuantAbsmax(t *testing.T) {
	e := e8()
	for si, shape := range roundTripShapes {
		n := int(shape[0])
		if len(shape) == 2 {
			n *= int(shape[1])
		}
		x := randomWeights(n, 0.02, uint64(100+si))
		plain := mustQuantize(t, x, shape, false)
		q := mustQuantize(t, x, shape, true)
		nBlocks := len(plain.Absmax)
		if len(q.AbsmaxCodes) != nBlocks || len(q.AbsmaxScales) != (nBlocks+255)/256 {
			t.Fatalf("shape %v: %d codes, %d scales for %d blocks", shape, len(q.AbsmaxCodes), len(q.AbsmaxScales), nBlocks)
		}
		var sum float64
		for _, a := range plain.Absmax {
			sum += float64(a)
		}
		if mean := float32(sum / float64(nBlocks)); q.AbsmaxOffset != mean {
			t.Errorf("shape %v: offset %v, want mean %v", shape, q.AbsmaxOffset, mean)
		}
		for j, s := range q.AbsmaxScales {
			var want float32
			for _, a := range plain.Absmax[j*256 : min((j+1)*256, nBlocks)] {
				want = max(want, float32(math.Abs(float64(a-q.AbsmaxOffset))))
			}
			if s != want {
				t.Errorf("shape %v: scale %d = %v, want %v", shape, j, s, want)
			}
		}
		deq := q.blockAbsmax()
		worst := 0.0
		for b, a := range plain.Absmax {
			s := float64(q.AbsmaxScales[b/256])
			err := math.Abs(float64(a) - float64(deq[b]))
			if err > e*s+1e-6*(s+float64(a)+math.Abs(float64(q.AbsmaxOffset))) {
				t.Errorf("shape %v: absmax %d = %v comes back as %v (scale %v, bound %v)", shape, b, a, deq[b], s, e*s)
			}
			if s > 0 {
				worst = max(worst, err/s)
			}
		}
		t.Logf("shape %v: worst |absmax - deq| / scale = %.5f (bound %.5f)", shape, worst, e)
	}
}

func TestBitsPerParam(t *testing.T) {
	x := randomWeights(768*768, 0.02, 9)
	plain := mustQuantize(t, x, []int64{768, 768}, false)
	dq := mustQuantize(t, x, []int64{768, 768}, true)
	// 294912 packed bytes; 9216 blocks; 36 absmax blocks.
	if got, want := plain.StoredBytes(), 294912+4*9216; got != want {
		t.Errorf("plain StoredBytes = %d, want %d", got, want)
	}
	if got, want := dq.StoredBytes(), 294912+9216+4*36+4; got != want {
		t.Errorf("DQ StoredBytes = %d, want %d", got, want)
	}
	if got := plain.BitsPerParam(); got != 4.5 {
		t.Errorf("plain BitsPerParam = %v, want 4.5", got)
	}
	if got := dq.BitsPerParam(); got > 4.13 || got < 4.125 {
		t.Errorf("DQ BitsPerParam = %v, want about 4.127 (<= 4.13)", got)
	}
	t.Logf("768x768: %.4f bits/param plain, %.4f with double quantization", plain.BitsPerParam(), dq.BitsPerParam())
}

func TestValidate(t *testing.T) {
	x := randomWeights(1000, 0.02, 11)
	for _, c := range []struct {
		name   string
		dq     bool
		mutate func(q *Quantized)
	}{
		{"N differs from shape", false, func(q *Quantized) { q.N = 999 }},
		{"short packed", false, func(q *Quantized) { q.Packed = q.Packed[:10] }},
		{"missing absmax", false, func(q *Quantized) { q.Absmax = q.Absmax[:3] }},
		{"DQ fields without DoubleQuant", false, func(q *Quantized) { q.AbsmaxCodes = []uint8{1} }},
		{"NaN absmax", false, func(q *Quantized) { q.Absmax[2] = float32(math.NaN()) }},
		{"absmax with DoubleQuant", true, func(q *Quantized) { q.Absmax = make([]float32, 16) }},
		{"short absmax codes", true, func(q *Quantized) { q.AbsmaxCodes = q.AbsmaxCodes[:5] }},
		{"missing scale", true, func(q *Quantized) { q.AbsmaxScales = nil }},
		{"infinite offset", true, func(q *Quantized) { q.AbsmaxOffset = float32(math.Inf(1)) }},
		{"DoubleQuant cleared", true, func(q *Quantized) { q.DoubleQuant = false }},
	} {
		q := mustQuantize(t, x, []int64{10, 100}, c.dq)
		if err := q.Validate(); err != nil {
			t.Fatalf("%s: valid tensor rejected: %v", c.name, err)
		}
		c.mutate(q)
		if err := q.Validate(); !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrShape) {
			t.Errorf("%s: Validate = %v, want ErrCorrupt", c.name, err)
		}
		if out, err := q.Dequantize(); err == nil || out != nil {
			t.Errorf("%s: Dequantize = %d values, %v; want an error", c.name, len(out), err)
		}
	}
}

func BenchmarkQuantize768(b *testing.B) {
	x := randomWeights(768*768, 0.02, 1)
	for _, dq := range []bool{false, true} {
		b.Run(map[bool]string{false: "plain", true: "dq"}[dq], func(b *testing.B) {
			for b.Loop() {
				if _, err := Quantize(x, []int64{768, 768}, dq); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestSubnormalBlock: when 1/absmax overflows float32 the block is divided by
// its absmax, so codes stay meaningful (multiplying by +Inf would give codes
// 0 and 15 only).
func TestSubnormalBlock(t *testing.T) {
	x := []float32{1e-39, -5e-40, 2.5e-40, 0}
	if r := 1 / x[0]; !math.IsInf(float64(r), 1) {
		t.Fatalf("1/%v = %v in float32, test premise wrong", x[0], r)
	}
	q := mustQuantize(t, x, []int64{4}, false)
	if got := codes(q); !slices.Equal(got, []uint8{15, 2, 10, 7}) {
		t.Errorf("codes %v, want [15 2 10 7]", got)
	}
}
