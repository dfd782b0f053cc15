package nf4

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/sugarme/gotch"
	lib "github.com/sugarme/gotch/libtch"
	"github.com/sugarme/gotch/ts"
)

func mustUpload(t testing.TB, q *Quantized) *Weight {
	t.Helper()
	w, err := q.Upload(gotch.CPU)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	t.Cleanup(func() {
		if err := w.Drop(); err != nil {
			t.Errorf("drop: %v", err)
		}
	})
	return w
}

// dequantizePaths are Dequantize's two ways of building the weight: the
// fused C++ loop it takes on CPU and the tensor ops it takes on other
// devices, run here on CPU so that both are checked against the reference.
var dequantizePaths = []struct {
	name string
	run  func(w *Weight, dtype gotch.DType) (*ts.Tensor, error)
}{
	{"fused", (*Weight).Dequantize},
	{"ops", (*Weight).DequantizeOps},
}

// dequantizeValues runs one of dequantizePaths and returns the result's
// shape, dtype, requires-grad flag and values, read as float32 (gotch
// cannot copy bf16 out; bf16 to float32 is exact).
func dequantizeValues(t *testing.T, w *Weight, dtype gotch.DType, path int) ([]int64, gotch.DType, bool, []float32) {
	t.Helper()
	out, err := dequantizePaths[path].run(w, dtype)
	if err != nil {
		t.Fatalf("%s dequantize (%v): %v", dequantizePaths[path].name, dtype, err)
	}
	defer out.MustDrop()
	rg, err := out.RequiresGrad()
	if err != nil {
		t.Fatalf("requires grad: %v", err)
	}
	f := out.MustTotype(gotch.Float, false)
	defer f.MustDrop()
	return out.MustSize(), out.DType(), rg, f.Vals().([]float32)
}

var weightShapes = []struct {
	shape []int64
	dq    bool
}{
	{[]int64{768, 768}, false},
	{[]int64{768, 768}, true},
	{[]int64{3072, 40}, true}, // 1920 blocks: a short 256-block of absmax codes
	{[]int64{1000}, false},    // short last block
	{[]int64{1000}, true},
	{[]int64{7, 9}, true}, // odd count
	{[]int64{2, 3, 5}, false},
	{[]int64{1}, true},
}

func shapeLen(shape []int64) int {
	n := 1
	for _, d := range shape {
		n *= int(d)
	}
	return n
}

// TestWeightDequantize: on both paths a Float result is the Go reference bit
// for bit, and a BFloat16 result is that reference rounded to nearest even
// (so within half an ulp, at most 2^-8 relative, of it), in the weight's
// shape and never requiring grad.
func TestWeightDequantize(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for _, dt := range []struct {
		dtype gotch.DType
		seed  uint64
		round func(float32) float32 // the reference as the dtype holds it
	}{
		{gotch.Float, 200, func(f float32) float32 { return f }},
		{gotch.BFloat16, 300, func(f float32) float32 { return math.Float32frombits(uint32(bf16(f)) << 16) }},
	} {
		for i, c := range weightShapes {
			for p, path := range dequantizePaths {
				name := fmt.Sprintf("%v/%s/%v/dq=%v", dt.dtype, path.name, c.shape, c.dq)
				x := randomWeights(shapeLen(c.shape), 0.05, dt.seed+uint64(i))
				q := mustQuantize(t, x, c.shape, c.dq)
				want := mustDequantize(t, q)
				w := mustUpload(t, q)
				shape, dtype, rg, vals := dequantizeValues(t, w, dt.dtype, p)
				if fmt.Sprint(shape) != fmt.Sprint(c.shape) || dtype != dt.dtype || rg {
					t.Errorf("%s: result shape %v dtype %v requires grad %v; want %v %v false", name, shape, dtype, rg, c.shape, dt.dtype)
				}
				if len(vals) != len(want) {
					t.Fatalf("%s: %d values, want %d", name, len(vals), len(want))
				}
				bad := 0
				for j, g := range vals {
					r := dt.round(want[j])
					if math.Float32bits(g) != math.Float32bits(r) || math.Abs(float64(g)-float64(want[j])) > math.Abs(float64(want[j]))/256 {
						if bad++; bad <= 5 {
							t.Errorf("%s: element %d = %v, reference %v (%v in %v)", name, j, g, want[j], r, dt.dtype)
						}
					}
				}
				if bad > 0 {
					t.Errorf("%s: %d of %d elements differ", name, bad, len(want))
				}
			}
		}
	}
}

// TestWeightCodebook decodes every byte value on both paths (absmax 1):
// byte b must give Codebook[b>>4], Codebook[b&15], rounded to nearest even
// in bf16.
func TestWeightCodebook(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	q := &Quantized{Shape: []int64{8, 64}, N: 512, Absmax: make([]float32, 8)}
	for b := 0; b < 256; b++ {
		q.Packed = append(q.Packed, byte(b))
	}
	for i := range q.Absmax {
		q.Absmax[i] = 1
	}
	w := mustUpload(t, q)
	for p, path := range dequantizePaths {
		for _, dtype := range []gotch.DType{gotch.Float, gotch.BFloat16} {
			round := func(f float32) float32 { return f }
			if dtype == gotch.BFloat16 {
				round = func(f float32) float32 { return math.Float32frombits(uint32(bf16(f)) << 16) }
			}
			_, _, _, got := dequantizeValues(t, w, dtype, p)
			for b := 0; b < 256; b++ {
				hi, lo := round(wantCodebook[b>>4]), round(wantCodebook[b&15])
				if got[2*b] != hi || got[2*b+1] != lo {
					t.Errorf("%s %v: byte %#02x decodes to %v, %v; want %v, %v", path.name, dtype, b, got[2*b], got[2*b+1], hi, lo)
				}
			}
		}
	}
}

// bf16 rounds f to bfloat16 (round to nearest even), as libtorch converts.
func bf16(f float32) uint16 {
	b := math.Float32bits(f)
	return uint16((b + 0x7FFF + (b>>16)&1) >> 16)
}

// TestWeightDequantizeNoGrad: Dequantize turns gradient tracking off while it
// runs (a result built from a weight tensor that requires grad does not) and
// restores the caller's mode either way.
func TestWeightDequantizeNoGrad(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for _, dq := range []bool{false, true} {
		q := mustQuantize(t, randomWeights(640, 0.05, 5), []int64{10, 64}, dq)
		w := mustUpload(t, q)
		// A float tensor of the weight that the result depends on.
		leaf := &w.absmax
		if dq {
			leaf = &w.scales
		}
		rg, err := (*leaf).SetRequiresGrad(true, false)
		if err != nil {
			t.Fatalf("set requires grad: %v", err)
		}
		(*leaf).MustDrop()
		*leaf = rg
		for _, mode := range []bool{true, false} {
			prev := lib.LoraftGradSetEnabled(mode)
			out, err := w.Dequantize(gotch.Float)
			after := lib.LoraftGradSetEnabled(prev)
			if err != nil {
				t.Fatalf("dequantize: %v", err)
			}
			if out.MustRequiresGrad() {
				t.Errorf("dq %v, grad mode %v: result requires grad", dq, mode)
			}
			out.MustDrop()
			if after != mode {
				t.Errorf("dq %v: grad mode %v before Dequantize, %v after", dq, mode, after)
			}
		}
	}
}

// TestWeightDequantizeConcurrent: goroutines sharing one Weight all get the
// reference result.
func TestWeightDequantizeConcurrent(t *testing.T) {
	q := mustQuantize(t, randomWeights(64*96, 0.05, 12), []int64{64, 96}, true)
	want := mustDequantize(t, q)
	w := mustUpload(t, q)
	errs := make(chan error, 4)
	for g := 0; g < 4; g++ {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for i := 0; i < 20; i++ {
				out, err := w.Dequantize(gotch.Float)
				if err != nil {
					errs <- err
					return
				}
				got := out.Vals().([]float32)
				out.MustDrop()
				for j := range want {
					if got[j] != want[j] {
						errs <- fmt.Errorf("element %d = %v, want %v", j, got[j], want[j])
						return
					}
				}
			}
			errs <- nil
		}()
	}
	for g := 0; g < 4; g++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestWeightErrors(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	q := mustQuantize(t, randomWeights(128, 0.05, 6), []int64{2, 64}, true)
	w, err := q.Upload(gotch.CPU)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	for _, dtype := range []gotch.DType{gotch.Int64, gotch.Double, gotch.Uint8} {
		if out, err := w.Dequantize(dtype); !errors.Is(err, ErrDType) || out != nil {
			t.Errorf("Dequantize(%v) = %v, %v; want ErrDType", dtype, out, err)
		}
	}
	if err := w.Drop(); err != nil {
		t.Fatalf("drop: %v", err)
	}
	if err := w.Drop(); err != nil {
		t.Errorf("second drop: %v", err)
	}
	if out, err := w.Dequantize(gotch.Float); !errors.Is(err, ErrDropped) || out != nil {
		t.Errorf("Dequantize after Drop = %v, %v; want ErrDropped", out, err)
	}
	bad := *q
	bad.AbsmaxScales = nil
	if w, err := bad.Upload(gotch.CPU); !errors.Is(err, ErrCorrupt) || w != nil {
		t.Errorf("Upload of an inconsistent tensor = %v, %v; want ErrCorrupt", w, err)
	}
}

func TestWeightStoredBytes(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	x := randomWeights(768*768, 0.02, 8)
	for _, dq := range []bool{false, true} {
		q := mustQuantize(t, x, []int64{768, 768}, dq)
		w := mustUpload(t, q)
		if w.StoredBytes() != q.StoredBytes() {
			t.Errorf("dq %v: Weight.StoredBytes = %d, Quantized.StoredBytes = %d", dq, w.StoredBytes(), q.StoredBytes())
		}
		if w.DoubleQuant() != dq || fmt.Sprint(w.Shape()) != "[768 768]" || w.Device() != gotch.CPU {
			t.Errorf("dq %v: accessors report dq %v, shape %v, device %v", dq, w.DoubleQuant(), w.Shape(), w.Device())
		}
	}
	// A short block is padded on the device: 1000 elements are 16 blocks.
	q := mustQuantize(t, x[:1000], []int64{1000}, false)
	w := mustUpload(t, q)
	if got, want := w.StoredBytes(), 16*32+16*4; got != want {
		t.Errorf("1000 elements: Weight.StoredBytes = %d, want %d", got, want)
	}
}

// liveTensors returns the names of the tensors gotch has created and not
// yet freed.
func liveTensors(t *testing.T) map[string]bool {
	t.Helper()
	for _, line := range strings.Split(ts.CheckCMemLeak(), "\n") {
		if rest, ok := strings.CutPrefix(line, "Tensors not been released: "); ok {
			names := map[string]bool{}
			for _, f := range strings.Fields(strings.Trim(rest, "[]")) {
				name, err := strconv.Unquote(f)
				if err != nil {
					t.Fatalf("gotch's leak report: %q: %v", f, err)
				}
				names[name] = true
			}
			return names
		}
	}
	t.Fatal("gotch's leak report has no tensor list")
	return nil
}

// added counts the names in after that are not in before.
func added(before, after map[string]bool) int {
	n := 0
	for name := range after {
		if !before[name] {
			n++
		}
	}
	return n
}

// rssBytes reads this process's resident set size after returning freed Go
// memory to the OS.
func rssBytes() int64 {
	debug.FreeOSMemory()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// TestWeightDequantizeDropsIntermediates runs 200 dequantizations of a
// weight by each path and checks after each that the only tensor it added to
// gotch's live set is its result. Automatic GC is off during the loop, so an
// intermediate tensor that Dequantize forgot to drop cannot be freed by a
// finalizer before it is counted; the loop collects by hand every 20 calls
// to bound Go memory.
func TestWeightDequantizeDropsIntermediates(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	for _, c := range []struct {
		dq    bool
		dtype gotch.DType
		n     int
	}{{true, gotch.Float, 65536}, {false, gotch.BFloat16, 65536}, {true, gotch.Float, 1000}} {
		q := mustQuantize(t, randomWeights(c.n, 0.05, 10), []int64{int64(c.n)}, c.dq)
		w := mustUpload(t, q)
		base := liveTensors(t)
		rss0 := rssBytes()
		for i := 0; i < 200; i++ {
			path := dequantizePaths[i%len(dequantizePaths)]
			before := liveTensors(t)
			out, err := path.run(w, c.dtype)
			if err != nil {
				t.Fatalf("%s call %d: %v", path.name, i, err)
			}
			if n := added(before, liveTensors(t)); n != 1 {
				t.Fatalf("%s dq %v %v: call %d left %d new tensors alive, want 1 (the result)", path.name, c.dq, c.dtype, i, n)
			}
			if err := out.Drop(); err != nil {
				t.Fatalf("drop result: %v", err)
			}
			if i%20 == 19 {
				runtime.GC()
			}
		}
		if n := added(base, liveTensors(t)); n != 0 {
			t.Errorf("dq %v %v: %d tensors alive after the loop that were not before", c.dq, c.dtype, n)
		}
		t.Logf("dq %v %v n=%d: RSS %+d KiB over 200 calls (not asserted: gotch's ops leak a malloc(0) each)",
			c.dq, c.dtype, c.n, (rssBytes()-rss0)/1024)
	}
}

// TestDequantizeShimChecks calls libtch.so's loraft_nf4_dequantize with what
// a Weight could never pass it, by both paths: each is refused with its
// reason in gotch's error state, and no tensor comes back.
func TestDequantizeShimChecks(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	w := mustUpload(t, mustQuantize(t, randomWeights(512, 0.05, 3), []int64{8, 64}, true))
	c := func(x *ts.Tensor) lib.Ctensor {
		if x == nil {
			return nil
		}
		return lib.Ctensor(x.Ctensor())
	}
	for _, tc := range []struct {
		name    string
		n       int64
		shape   []int64
		dtype   int32
		noScale bool
		want    string
	}{
		{"shape of another size", 512, []int64{8, 65}, 6, false, "shape does not hold n elements"},
		{"integer dtype", 512, []int64{8, 64}, 4, false, "dtype must be float or bfloat16"},
		{"no elements", 0, []int64{0}, 6, false, "no elements"},
		{"more elements than codes", 1024, []int64{1024}, 6, false, "packed codes must be"},
		{"no absmax scales", 512, []int64{8, 64}, 6, true, "absmax scales must be"},
	} {
		for _, fused := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/fused=%v", tc.name, fused), func(t *testing.T) {
				scales := w.scales
				if tc.noScale {
					scales = nil
				}
				var out lib.Ctensor
				lib.LoraftNF4Dequantize(&out, c(w.packed), c(w.pairs), c(w.absmax), c(w.absmaxCodes), c(scales), c(w.offset),
					c(w.dynMap), tc.n, tc.shape, tc.dtype, fused)
				err := ts.TorchErr()
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("err = %v, want one saying %q", err, tc.want)
				}
				if out != nil {
					ts.New(out).MustDrop()
					t.Error("a tensor came back with the error")
				}
			})
		}
	}
}

// BenchmarkWeightDequantize768 times both of Dequantize's paths on a
// 768x768 weight: the fused C++ loop (CPU) and the tensor ops (other
// devices).
func BenchmarkWeightDequantize768(b *testing.B) {
	x := randomWeights(768*768, 0.02, 1)
	for _, c := range []struct {
		name  string
		dq    bool
		dtype gotch.DType
	}{{"float/dq", true, gotch.Float}, {"float/plain", false, gotch.Float}, {"bf16/dq", true, gotch.BFloat16}} {
		for _, path := range dequantizePaths {
			b.Run(path.name+"/"+c.name, func(b *testing.B) {
				runtime.LockOSThread() // gotch's error state is per OS thread
				defer runtime.UnlockOSThread()
				q := mustQuantize(b, x, []int64{768, 768}, c.dq)
				w := mustUpload(b, q)
				for b.Loop() {
					out, err := path.run(w, c.dtype)
					if err != nil {
						b.Fatal(err)
					}
					if err := out.Drop(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkQuantizedDequantize768 times the pure-Go reference for comparison.
func BenchmarkQuantizedDequantize768(b *testing.B) {
	q := mustQuantize(b, randomWeights(768*768, 0.02, 1), []int64{768, 768}, true)
	for b.Loop() {
		if _, err := q.Dequantize(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestWeightLinear: Linear's output and x's gradient equal those of a plain
// linear layer on Dequantize's weight (which autograd keeps), for both
// dtypes, with and without bias, on 2-D and 3-D inputs; the weight's
// tensors and the bias get no gradient.
func TestWeightLinear(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const out, in = 48, 64
	for _, tc := range []struct {
		name   string
		dq     bool
		dtype  gotch.DType
		bias   bool
		xshape []int64
	}{
		{"fp32 2-D bias", true, gotch.Float, true, []int64{5, in}},
		{"fp32 3-D", false, gotch.Float, false, []int64{2, 3, in}},
		{"bf16 3-D bias", true, gotch.BFloat16, true, []int64{2, 3, in}},
		{"bf16 2-D", false, gotch.BFloat16, false, []int64{4, in}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			w := mustUpload(t, mustQuantize(t, randomWeights(out*in, 0.05, 7), []int64{out, in}, tc.dq))
			xlen := shapeLen(tc.xshape)
			xv, rv := randomWeights(xlen, 1, 8), randomWeights(xlen/in*out, 1, 9)
			var bias *ts.Tensor
			if tc.bias {
				bias = ts.MustOfSlice(randomWeights(out, 0.1, 10)).MustTotype(tc.dtype, true)
				defer bias.MustDrop()
			}
			// run returns y (as float32) and x's gradient of sum(y * r).
			run := func(layer func(x *ts.Tensor) *ts.Tensor) ([]float32, []float32) {
				x := ts.MustOfSlice(xv).MustView(tc.xshape, true).MustTotype(tc.dtype, true).MustSetRequiresGrad(true, true)
				defer x.MustDrop()
				y := layer(x)
				defer y.MustDrop()
				r := ts.MustOfSlice(rv).MustView(y.MustSize(), true)
				defer r.MustDrop()
				yf := y.MustTotype(gotch.Float, false)
				defer yf.MustDrop()
				loss := yf.MustMul(r, false).MustSum(gotch.Float, true)
				defer loss.MustDrop()
				loss.MustBackward()
				g := x.MustGrad(false).MustTotype(gotch.Float, true)
				defer g.MustDrop()
				return yf.Vals().([]float32), g.Vals().([]float32)
			}
			yA, gA := run(func(x *ts.Tensor) *ts.Tensor {
				y, err := w.Linear(x, bias)
				if err != nil {
					t.Fatal(err)
				}
				if !y.MustRequiresGrad() {
					t.Fatal("Linear's output does not require grad: backward would not reach x")
				}
				return y
			})
			yK, gK := run(func(x *ts.Tensor) *ts.Tensor {
				wt, err := w.Dequantize(tc.dtype)
				if err != nil {
					t.Fatal(err)
				}
				defer wt.MustDrop()
				if bias != nil {
					return ts.MustLinear(x, wt, bias)
				}
				return x.MustMatmul(wt.MustT(false), false)
			})
			for _, c := range []struct {
				what      string
				got, want []float32
			}{{"output", yA, yK}, {"x gradient", gA, gK}} {
				if len(c.got) != len(c.want) {
					t.Fatalf("%s: %d values, want %d", c.what, len(c.got), len(c.want))
				}
				for i := range c.want {
					if c.got[i] != c.want[i] {
						t.Fatalf("%s[%d] = %v, want %v (a plain linear on the dequantized weight)", c.what, i, c.got[i], c.want[i])
					}
				}
			}
			for _, p := range []*ts.Tensor{w.packed, w.pairs, w.absmax, w.absmaxCodes, w.scales, w.offset, w.dynMap, bias} {
				if p != nil && p.MustRequiresGrad() {
					t.Error("a frozen tensor requires grad")
				}
			}
		})
	}
}

// TestWeightLinearErrors: what Linear refuses, by name.
func TestWeightLinearErrors(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	w := mustUpload(t, mustQuantize(t, randomWeights(8*64, 0.05, 3), []int64{8, 64}, true))
	flat := mustUpload(t, mustQuantize(t, randomWeights(512, 0.05, 3), []int64{512}, true))
	x := ts.MustOnes([]int64{2, 64}, gotch.Float, gotch.CPU)
	defer x.MustDrop()
	xi := ts.MustOnes([]int64{2, 64}, gotch.Int64, gotch.CPU)
	defer xi.MustDrop()
	xwide := ts.MustOnes([]int64{2, 65}, gotch.Float, gotch.CPU)
	defer xwide.MustDrop()
	for _, tc := range []struct {
		name string
		w    *Weight
		x    *ts.Tensor
		want string
	}{
		{"1-D weight", flat, x, "want [out, in]"},
		{"no input", w, nil, "no input"},
		{"integer input", w, xi, "want Float or BFloat16"},
		{"input of another width", w, xwide, "nf4 linear"},
	} {
		if y, err := tc.w.Linear(tc.x, nil); err == nil || !strings.Contains(err.Error(), tc.want) || y != nil {
			t.Errorf("%s: Linear = %v, %v; want an error saying %q", tc.name, y, err, tc.want)
		}
	}
	dropped := mustUpload(t, mustQuantize(t, randomWeights(8*64, 0.05, 3), []int64{8, 64}, true))
	if err := dropped.Drop(); err != nil {
		t.Fatal(err)
	}
	if y, err := dropped.Linear(x, nil); !errors.Is(err, ErrDropped) || y != nil {
		t.Errorf("Linear after Drop = %v, %v; want ErrDropped", y, err)
	}
}
