package nf4

import (
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// wantCodebook is the NF4 table of bitsandbytes (docs/FACTS.md "NF4").
var wantCodebook = [16]float32{
	-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
	-0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
	0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
	0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
}

// TestCodebookLookup checks every code's value, both in the table and as
// Dequantize reads it from packed nibbles (absmax 1).
func TestCodebookLookup(t *testing.T) {
	cb := Codebook()
	q := &Quantized{Shape: []int64{16}, N: 16, Absmax: []float32{1}}
	for code := 0; code < 16; code += 2 {
		q.Packed = append(q.Packed, byte(code<<4|(code+1)))
	}
	got, err := q.Dequantize()
	if err != nil {
		t.Fatalf("dequantize: %v", err)
	}
	for code, want := range wantCodebook {
		if cb[code] != want {
			t.Errorf("Codebook()[%d] = %v, want %v", code, cb[code], want)
		}
		if got[code] != want {
			t.Errorf("code %d dequantizes to %v, want %v", code, got[code], want)
		}
	}
	// Codebook returns a copy: changing it must not change quantization.
	cb[15] = 0
	if Codebook()[15] != 1 {
		t.Errorf("Codebook() exposes the package's table")
	}
}

// TestThresholds checks the decision thresholds against the exact midpoints
// of adjacent codes: each is one of the (at most two) float32 values nearest
// to the midpoint, and equals it whenever the midpoint is a float32 value.
func TestThresholds(t *testing.T) {
	for k, th := range nf4Thresholds {
		mid := (float64(codebook[k]) + float64(codebook[k+1])) / 2
		below, above := float32(mid), float32(mid)
		if float64(below) > mid {
			below = math.Nextafter32(below, -2)
		}
		if float64(above) < mid {
			above = math.Nextafter32(above, 2)
		}
		if th != below && th != above {
			t.Errorf("threshold %d|%d = %v, want %v or %v (midpoint %v)", k, k+1, th, below, above, mid)
		}
	}
}

// TestQuantizeNF4Tie checks that a value on the threshold between two codes
// takes the lower code and the next float32 above it the upper one, both for
// the element function and through Quantize (absmax 1, so no rescaling); and
// that a value exactly halfway between two codes, where that is a float32
// value, takes the lower code.
func TestQuantizeNF4Tie(t *testing.T) {
	for k, mid := range nf4Thresholds {
		above := math.Nextafter32(mid, 2)
		if got := quantizeNF4(mid); got != uint8(k) {
			t.Errorf("quantizeNF4(%v) (midpoint of codes %d, %d) = %d, want %d", mid, k, k+1, got, k)
		}
		if got := quantizeNF4(above); got != uint8(k+1) {
			t.Errorf("quantizeNF4(%v) (just above midpoint %d|%d) = %d, want %d", above, k, k+1, got, k+1)
		}
		q, err := Quantize([]float32{1, mid, above, -1}, []int64{4}, false)
		if err != nil {
			t.Fatalf("quantize: %v", err)
		}
		want := []byte{15<<4 | byte(k), byte(k+1) << 4} // -1's code, 0, in the low nibble
		if q.Packed[0] != want[0] || q.Packed[1] != want[1] {
			t.Errorf("midpoint %d|%d: packed %x, want %x", k, k+1, q.Packed, want)
		}
	}
	exact := 0
	for k := 0; k < 15; k++ {
		mid := (float64(codebook[k]) + float64(codebook[k+1])) / 2
		if float64(float32(mid)) != mid {
			continue // no float32 input is exactly halfway
		}
		exact++
		if got := quantizeNF4(float32(mid)); got != uint8(k) {
			t.Errorf("quantizeNF4(%v), exactly halfway between codes %d and %d, = %d, want %d", mid, k, k+1, got, k)
		}
	}
	// 0|7 and 7|8 at least: halving a float32 is exact.
	if exact < 2 {
		t.Errorf("only %d exact midpoints tested", exact)
	}
	t.Logf("%d of 15 midpoints are float32 values", exact)
}

// TestQuantizeNF4Nearest checks on random values that the code found by the
// kernel's decision tree is a nearest code.
func TestQuantizeNF4Nearest(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200000; i++ {
		x := float32(rng.Float64()*2.2 - 1.1)
		got := quantizeNF4(x)
		dGot := math.Abs(float64(x) - float64(codebook[got]))
		for k, c := range codebook {
			if d := math.Abs(float64(x) - float64(c)); d < dGot-1e-7 {
				t.Fatalf("quantizeNF4(%v) = %d (distance %v), code %d is closer (%v)", x, got, dGot, k, d)
			}
		}
	}
}

func TestDynamicMap(t *testing.T) {
	m := DynamicMap()
	for k := 1; k < len(m); k++ {
		if !(m[k-1] < m[k]) {
			t.Fatalf("map not strictly ascending at %d: %v, %v", k, m[k-1], m[k])
		}
	}
	// Known entries (float32 bits): the ends of the top decade are
	// ±1e0 * (1 - 0.9/64/2) = ±0.99296875, the smallest magnitudes are
	// float32(1e-6) * float32(0.55) (the mean of linspace(0.1, 1, 2)).
	known := []struct {
		k    int
		bits uint32
	}{
		{0, 0xbf7e3333},   // -0.99296874
		{1, 0xbf7a999a},   // -0.97890627
		{126, 0xb513a3b7}, // -5.5000004e-07
		{127, 0x00000000}, // 0
		{128, 0x3513a3b7}, // 5.5000004e-07
		{129, 0x365a1a94}, // 3.2500002e-06
		{190, 0x3dc9eb85}, // 0.09859375
		{254, 0x3f7e3333}, // 0.99296874
		{255, 0x3f800000}, // 1
	}
	for _, c := range known {
		if got := math.Float32bits(m[c.k]); got != c.bits {
			t.Errorf("DynamicMap()[%d] = %v (%08x), want %v (%08x)", c.k, m[c.k], got, math.Float32frombits(c.bits), c.bits)
		}
	}
	if m[dynamicZeroCode] != 0 || m[255] != 1 {
		t.Errorf("map[%d] = %v, map[255] = %v; want 0 and 1", dynamicZeroCode, m[dynamicZeroCode], m[255])
	}
	// Without 1.0 the map is symmetric: 127 negative values mirror 127
	// positive ones, 2^i of them per decade 10^(i-6) .. 10^(i-5).
	for k := 0; k < 127; k++ {
		if m[k] != -m[254-k] {
			t.Errorf("map[%d] = %v is not -map[%d] = %v", k, m[k], 254-k, -m[254-k])
		}
	}
	for i := 0; i < 7; i++ {
		lo, hi := math.Pow(10, float64(i-7)), math.Pow(10, float64(i-6))
		n := 0
		for _, v := range m[128:255] {
			if float64(v) > lo && float64(v) < hi {
				n++
			}
		}
		if n != 1<<i {
			t.Errorf("%d positive values in (%g, %g), want %d", n, lo, hi, 1<<i)
		}
	}
}

// TestDynamicMapMatchesTorch rebuilds create_dynamic_map with libtorch's own
// linspace (the only step whose last bit depends on the PyTorch build; the
// rest is exact float32 arithmetic) and requires every entry within 1e-6
// relative (a few ulps), which any mistake in the construction would exceed.
func TestDynamicMapMatchesTorch(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	scales := []float64{1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1}
	var data []float32
	for i, s := range scales {
		start, end := ts.FloatScalar(0.1), ts.FloatScalar(1)
		l, err := ts.Linspace(start, end, int64(1<<i+1), gotch.Float, gotch.CPU)
		start.MustDrop()
		end.MustDrop()
		if err != nil {
			t.Fatalf("linspace: %v", err)
		}
		p := l.Vals().([]float32)
		l.MustDrop()
		for k := 0; k+1 < len(p); k++ {
			v := float32(s) * ((p[k] + p[k+1]) / 2)
			data = append(data, v, -v)
		}
	}
	data = append(data, 0, 1)
	sortFloat32(data)
	m := DynamicMap()
	exact := 0
	for k := range m {
		if m[k] == data[k] {
			exact++
		} else if math.Abs(float64(m[k])-float64(data[k])) > 1e-6*math.Abs(float64(data[k])) {
			t.Errorf("map[%d] = %v, libtorch construction gives %v", k, m[k], data[k])
		}
	}
	t.Logf("%d of 256 entries equal this libtorch's bit for bit, the rest within 1e-6 relative", exact)
}

// TestQuantizeDynamic checks the kernel's binary search: every map value maps
// to its own index, a value on the float32 midpoint of two neighbours goes to
// the even index of the two, values just off it to the nearer neighbour, and
// random values to a nearest entry.
func TestQuantizeDynamic(t *testing.T) {
	m := DynamicMap()
	for k, v := range m {
		if got := quantizeDynamic(v); got != uint8(k) {
			t.Errorf("quantizeDynamic(map[%d] = %v) = %d", k, v, got)
		}
	}
	for k := 0; k+1 < len(m); k++ {
		mid := (m[k] + m[k+1]) * 0.5
		even := uint8(k + k%2)
		if got := quantizeDynamic(mid); got != even {
			t.Errorf("quantizeDynamic(midpoint %d|%d = %v) = %d, want %d", k, k+1, mid, got, even)
		}
		if lo := math.Nextafter32(mid, -2); lo > m[k] {
			if got := quantizeDynamic(lo); got != uint8(k) {
				t.Errorf("quantizeDynamic(%v, below midpoint %d|%d) = %d, want %d", lo, k, k+1, got, k)
			}
		}
		if hi := math.Nextafter32(mid, 2); hi < m[k+1] {
			if got := quantizeDynamic(hi); got != uint8(k+1) {
				t.Errorf("quantizeDynamic(%v, above midpoint %d|%d) = %d, want %d", hi, k, k+1, got, k+1)
			}
		}
	}
	for _, c := range []struct {
		x    float32
		want uint8
	}{{-1, 0}, {-1.5, 0}, {1, 255}, {1.5, 255}, {0, dynamicZeroCode}} {
		if got := quantizeDynamic(c.x); got != c.want {
			t.Errorf("quantizeDynamic(%v) = %d, want %d", c.x, got, c.want)
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 100000; i++ {
		// Log-uniform magnitudes reach every decade of the map.
		x := float32(math.Pow(10, -7*rng.Float64()))
		if rng.IntN(2) == 0 {
			x = -x
		}
		got := quantizeDynamic(x)
		dGot := math.Abs(float64(x) - float64(m[got]))
		for k, v := range m {
			if d := math.Abs(float64(x) - float64(v)); d < dGot*(1-1e-6) {
				t.Fatalf("quantizeDynamic(%v) = %d (%v), %d (%v) is closer", x, got, m[got], k, v)
			}
		}
	}
}

func sortFloat32(v []float32) { slices.Sort(v) }
