package lora

import (
	"errors"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/loraft/loraft/trainer/graph"
	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// dense is a float32 Frozen for tests.
type dense struct{ t *ts.Tensor }

func (d dense) Weight(g *graph.Graph, dtype gotch.DType) *ts.Tensor { return g.To(d.t, dtype) }
func (d dense) Shape() [2]int64                                     { s := d.t.MustSize(); return [2]int64{s[0], s[1]} }

func tensorOf(t *testing.T, data []float32, shape ...int64) *ts.Tensor {
	t.Helper()
	x, err := ts.NewTensorFromData(data, shape)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func randData(rng *rand.Rand, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(rng.NormFloat64())
	}
	return out
}

// newLayer builds a 6→5 Linear with a rank-3 adapter.
func newLayer(t *testing.T, cfg Config) (*Linear, *ts.Tensor) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	w := tensorOf(t, randData(rng, 30), 5, 6)
	b := tensorOf(t, randData(rng, 5), 5)
	l := &Linear{Name: "enc.query", Base: dense{w}, Bias: b}
	if err := l.NewAdapter(cfg, rng, gotch.CPU); err != nil {
		t.Fatal(err)
	}
	x := tensorOf(t, randData(rng, 4*6), 4, 6)
	return l, x
}

// TestZeroBIsNoOp: a fresh adapter (B = 0) leaves the base layer's output
// unchanged, bit for bit.
func TestZeroBIsNoOp(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	l, x := newLayer(t, Config{Rank: 3, Alpha: 6, Targets: []string{"query"}})
	g := graph.New()
	defer g.Drop()
	with := l.Forward(g, x, gotch.Float, false).Float64Values()
	plain := g.Linear(x, l.Base.(dense).t, l.Bias).Float64Values()
	if g.Err() != nil {
		t.Fatal(g.Err())
	}
	for i := range with {
		if with[i] != plain[i] {
			t.Fatalf("output %d: %v with a zero-B adapter, %v without", i, with[i], plain[i])
		}
	}
	// A: uniform in ±1/√in.
	bound := 1 / math.Sqrt(6)
	for _, v := range l.A.Float64Values() {
		if math.Abs(v) > bound {
			t.Fatalf("A value %v outside ±%v", v, bound)
		}
	}
}

// TestGradientFiniteDifference checks autograd's dL/dA and dL/dB against
// central differences of L = Σ forward(x)² for a small layer with B ≠ 0.
func TestGradientFiniteDifference(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cfg := Config{Rank: 3, Alpha: 6, Targets: []string{"query"}}
	l, x := newLayer(t, cfg)
	// Give B values so both gradients are non-trivial; work in float64 for a tight check.
	rng := rand.New(rand.NewPCG(3, 4))
	toF64 := func(t0 *ts.Tensor) *ts.Tensor {
		d, err := t0.Totype(gotch.Double, true)
		if err != nil {
			t.Fatal(err)
		}
		return d.MustSetRequiresGrad(true, true)
	}
	l.B = tensorOf(t, randData(rng, 15), 5, 3)
	l.A, l.B = toF64(l.A.MustDetach(true)), toF64(l.B)
	l.Base = dense{l.Base.(dense).t.MustTotype(gotch.Double, true)}
	l.Bias = l.Bias.MustTotype(gotch.Double, true)
	x = x.MustTotype(gotch.Double, true)

	loss := func() (*ts.Tensor, *graph.Graph) {
		g := graph.New()
		y := l.Forward(g, x, gotch.Double, false)
		y = g.To(y, gotch.Double)
		s := g.Mul(y, y)
		out := g.Own(s.MustSum(gotch.Double, false))
		if g.Err() != nil {
			t.Fatal(g.Err())
		}
		return out, g
	}
	L, g := loss()
	if err := L.Backward(); err != nil {
		t.Fatal(err)
	}
	g.Drop()
	for _, p := range []struct {
		name string
		t    *ts.Tensor
	}{{"A", l.A}, {"B", l.B}} {
		grad := p.t.MustGrad(false).Float64Values()
		vals := p.t.Float64Values()
		const h = 1e-6
		for i := range vals {
			eval := func(v float64) float64 {
				d := append([]float64(nil), vals...)
				d[i] = v
				src := ts.MustOfSlice(d).MustView(p.t.MustSize(), true)
				ts.NoGrad(func() { p.t.Copy_(src) })
				src.MustDrop()
				Lv, g := loss()
				defer g.Drop()
				return Lv.Float64Values()[0]
			}
			num := (eval(vals[i]+h) - eval(vals[i]-h)) / (2 * h)
			eval(vals[i])
			if math.Abs(num-grad[i]) > 1e-5*math.Max(1, math.Abs(num)) {
				t.Errorf("d/d%s[%d]: autograd %v, finite difference %v", p.name, i, grad[i], num)
			}
		}
	}
}

func TestConfig(t *testing.T) {
	tests := []struct {
		cfg     Config
		scaling float64
		err     bool
	}{
		{Config{Rank: 8, Alpha: 16, Targets: []string{"query"}}, 2, false},
		{Config{Rank: 16, Alpha: 16, Targets: []string{"query"}, RSLoRA: true}, 4, false},
		{Config{Rank: 0, Alpha: 16, Targets: []string{"query"}}, 0, true},
		{Config{Rank: 8, Alpha: 0, Targets: []string{"query"}}, 0, true},
		{Config{Rank: 8, Alpha: 8, Dropout: 1, Targets: []string{"query"}}, 0, true},
		{Config{Rank: 8, Alpha: 8}, 0, true},
	}
	for _, tc := range tests {
		err := tc.cfg.Validate()
		if tc.err {
			if !errors.Is(err, ErrConfig) {
				t.Errorf("%+v: Validate() = %v, want ErrConfig", tc.cfg, err)
			}
			continue
		}
		if err != nil || tc.cfg.Scaling() != tc.scaling {
			t.Errorf("%+v: err %v scaling %v, want %v", tc.cfg, err, tc.cfg.Scaling(), tc.scaling)
		}
	}
	qv := DefaultConfig()
	all := Config{Rank: 8, Alpha: 8, Targets: []string{AllLinear}}
	for _, tc := range []struct {
		name    string
		qv, all bool
	}{
		{"bert.encoder.layer.0.attention.self.query", true, true},
		{"bert.encoder.layer.11.attention.self.value", true, true},
		{"bert.encoder.layer.0.attention.self.key", false, true},
		{"bert.encoder.layer.0.output.dense", false, true},
		{"bert.pooler.dense", false, true},
		{"classifier", false, false},
		{"bert.encoder.layer.0.attention.self.queryx", false, true},
	} {
		if qv.Matches(tc.name) != tc.qv || all.Matches(tc.name) != tc.all {
			t.Errorf("%s: query,value %v (want %v), all-linear %v (want %v)", tc.name, qv.Matches(tc.name), tc.qv, all.Matches(tc.name), tc.all)
		}
	}
}
