package optim

import (
	"math"
	"runtime"
	"testing"

	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/loraft/loraft/trainer/model"
	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

func TestLinearSchedule(t *testing.T) {
	tests := []struct {
		step, warmup, total int
		want                float64
	}{
		{0, 4, 20, 0}, {1, 4, 20, 0.25}, {3, 4, 20, 0.75}, {4, 4, 20, 1},
		{12, 4, 20, 0.5}, {19, 4, 20, 1.0 / 16}, {20, 4, 20, 0},
		{0, 0, 10, 1}, {5, 0, 10, 0.5},
	}
	for _, tc := range tests {
		if got := LinearSchedule(1, tc.step, tc.warmup, tc.total); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("LinearSchedule(step %d, warmup %d, total %d) = %v, want %v", tc.step, tc.warmup, tc.total, got, tc.want)
		}
	}
}

// setGrad makes p.grad = g by backpropagating Σ g·p from a zeroed gradient.
func setGrad(t *testing.T, p *ts.Tensor, g []float64) {
	t.Helper()
	if old, err := p.Grad(false); err == nil {
		if ok, _ := old.Defined(); ok {
			if err := old.Zero_(); err != nil {
				t.Fatal(err)
			}
		}
		old.MustDrop()
	}
	gt := ts.MustOfSlice([]float32{float32(g[0]), float32(g[1]), float32(g[2])})
	defer gt.MustDrop()
	s := p.MustMul(gt, false).MustSum(gotch.Float, true)
	defer s.MustDrop()
	if err := s.Backward(); err != nil {
		t.Fatal(err)
	}
}

// TestAdamWClosedForm applies two AdamW steps to a parameter with a known
// gradient and compares with torch.optim.AdamW's update written out in float64.
func TestAdamWClosedForm(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p0 := []float64{0.5, -1.0, 2.0}
	grads := [][]float64{{0.1, -0.2, 0.3}, {-0.05, 0.4, 0.0}}
	p := ts.MustOfSlice([]float32{0.5, -1.0, 2.0}).MustSetRequiresGrad(true, true)
	defer p.MustDrop()
	opt, err := NewAdamW([]model.Param{{Name: "p", T: p}}, 0.01)
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Drop()
	const lr = 0.1
	want := append([]float64(nil), p0...)
	m, v := make([]float64, 3), make([]float64, 3)
	for step, g := range grads {
		setGrad(t, p, g)
		func() {
			defer libtorch.NoGrad()()
			if err := opt.Update(lr); err != nil {
				t.Fatal(err)
			}
		}()
		n := float64(step + 1)
		for i := range want {
			want[i] *= 1 - lr*0.01
			gi := float64(float32(g[i]))
			m[i] = 0.9*m[i] + 0.1*gi
			v[i] = 0.999*v[i] + 0.001*gi*gi
			denom := math.Sqrt(v[i])/math.Sqrt(1-math.Pow(0.999, n)) + 1e-8
			want[i] -= lr / (1 - math.Pow(0.9, n)) * m[i] / denom
		}
	}
	got := p.Float64Values()
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-6 {
			t.Errorf("p[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

// TestAdamWMomentsRoundTrip: moments copied out and restored into a fresh
// optimizer give the same next update (what resume relies on).
func TestAdamWMomentsRoundTrip(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	newParam := func() *ts.Tensor { return ts.MustOfSlice([]float32{0.5, -1.0, 2.0}).MustSetRequiresGrad(true, true) }
	step := func(opt *AdamW, p *ts.Tensor, g []float64) {
		setGrad(t, p, g)
		defer libtorch.NoGrad()()
		if err := opt.Update(0.1); err != nil {
			t.Fatal(err)
		}
	}
	a, b := newParam(), newParam()
	defer a.MustDrop()
	defer b.MustDrop()
	oa, err := NewAdamW([]model.Param{{Name: "p", T: a}}, 0.01)
	if err != nil {
		t.Fatal(err)
	}
	defer oa.Drop()
	ob, err := NewAdamW([]model.Param{{Name: "p", T: b}}, 0.01)
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Drop()
	g1, g2 := []float64{0.1, -0.2, 0.3}, []float64{-0.05, 0.4, 0}
	step(oa, a, g1)
	step(ob, b, g1)
	m, v, err := oa.Moments()
	if err != nil {
		t.Fatal(err)
	}
	// Scramble b's optimizer, then restore it from a's moments.
	step(ob, b, []float64{9, 9, 9})
	av, err := model.HostCopy(a)
	if err != nil {
		t.Fatal(err)
	}
	if err := model.Assign(b, av); err != nil {
		t.Fatal(err)
	}
	if err := ob.Restore(m, v, oa.Step); err != nil {
		t.Fatal(err)
	}
	step(oa, a, g2)
	step(ob, b, g2)
	ga, gb := a.Float64Values(), b.Float64Values()
	for i := range ga {
		if ga[i] != gb[i] {
			t.Fatalf("after restore p[%d] = %v, want %v", i, gb[i], ga[i])
		}
	}
	if err := ob.Restore(map[string]*model.Tensor{}, v, 1); err == nil {
		t.Fatal("Restore without moments for p succeeded")
	}
}
