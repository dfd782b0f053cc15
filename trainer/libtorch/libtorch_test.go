package libtorch

import (
	"errors"
	"math"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// TestBackward runs a small computation with autograd through the adapted
// gotch: y = sum(tanh(x·W)), dy/dW checked against the closed form.
func TestBackward(t *testing.T) {
	runtime.LockOSThread() // gotch's error string and grad mode are per OS thread
	defer runtime.UnlockOSThread()

	xv := []float32{0.5, -1, 2, 0.25, 1.5, -0.75}
	wv := []float32{0.1, -0.2, 0.3, 0.4, -0.5, 0.6}
	x := ts.MustOfSlice(xv).MustView([]int64{2, 3}, true)
	defer x.MustDrop()
	w0 := ts.MustOfSlice(wv).MustView([]int64{3, 2}, true)
	w := w0.MustSetRequiresGrad(true, true)
	defer w.MustDrop()

	h := x.MustMatmul(w, false)
	th := h.MustTanh(true)
	y := th.MustSum(gotch.Float, true)
	defer y.MustDrop()
	if err := y.Backward(); err != nil {
		t.Fatalf("backward: %v", err)
	}
	g := w.MustGrad(false)
	defer g.MustDrop()
	got := g.Float64Values()

	// dy/dW[k][j] = sum_i x[i][k] * (1 - tanh(h[i][j])^2)
	want := make([]float64, 6)
	for k := 0; k < 3; k++ {
		for j := 0; j < 2; j++ {
			for i := 0; i < 2; i++ {
				var hij float64
				for m := 0; m < 3; m++ {
					hij += float64(xv[i*3+m]) * float64(wv[m*2+j])
				}
				th := math.Tanh(hij)
				want[k*2+j] += float64(xv[i*3+k]) * (1 - th*th)
			}
		}
	}
	if len(got) != len(want) {
		t.Fatalf("grad has %d values, want %d", len(got), len(want))
	}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-5 {
			t.Errorf("grad[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

// TestStubbedOpReturnsError calls scaled_dot_product_attention, which
// libtorch 1.13 lacks: the stub must surface as a Go error naming the op. On a
// libtorch that has the op, the same call must succeed instead.
func TestStubbedOpReturnsError(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	q := ts.MustOnes([]int64{1, 2, 4}, gotch.Float, gotch.CPU)
	defer q.MustDrop()
	out, err := ts.ScaledDotProductAttention(q, q, q, ts.NewTensor(), 0, false, nil)
	stubbed := slices.Contains(StubbedOps(), "atg_scaled_dot_product_attention")
	if stubbed {
		if err == nil {
			out.MustDrop()
			t.Fatal("stubbed op returned no error")
		}
		if !strings.Contains(err.Error(), "op scaled_dot_product_attention not available in the installed libtorch") {
			t.Fatalf("stubbed op error does not name the op: %v", err)
		}
		// The error is consumed: the next op on this thread succeeds.
		s := q.MustSum(gotch.Float, false)
		defer s.MustDrop()
		if v := s.Float64Values()[0]; v != 8 {
			t.Fatalf("sum after stubbed op = %v, want 8", v)
		}
		return
	}
	if err != nil {
		t.Fatalf("scaled_dot_product_attention is not in the stub list but failed: %v", err)
	}
	out.MustDrop()
}

func TestDescribe(t *testing.T) {
	info := Describe()
	if info.TorchVersion == "" || !strings.Contains(info.TorchVersion, ".") {
		t.Errorf("TorchVersion = %q, want x.y.z", info.TorchVersion)
	}
	if !strings.HasPrefix(info.GotchVersion, "v0.9.1") {
		t.Errorf("GotchVersion = %q, want v0.9.1…", info.GotchVersion)
	}
	if !strings.HasSuffix(info.Shim, "/libtch.so") {
		t.Errorf("Shim = %q, want the loaded libtch.so", info.Shim)
	}
	for _, op := range info.StubbedOps {
		if !strings.HasPrefix(op, "atg_") {
			t.Errorf("stubbed op %q is not a generated wrapper name", op)
		}
	}
}

func TestSetThreads(t *testing.T) {
	tests := []struct {
		env     string
		set     bool
		want    int
		wantErr bool
	}{
		{set: false, want: runtime.NumCPU()},
		{env: "1", set: true, want: 1},
		{env: " 2 ", set: true, want: 2},
		{env: "0", set: true, wantErr: true},
		{env: "lots", set: true, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.env, func(t *testing.T) {
			if tc.set {
				t.Setenv("OMP_NUM_THREADS", tc.env)
			} else {
				t.Setenv("OMP_NUM_THREADS", "")
				// t.Setenv cannot unset; SetThreads treats only a present variable as a request.
				unsetenv(t, "OMP_NUM_THREADS")
			}
			got, err := SetThreads()
			if tc.wantErr {
				if !errors.Is(err, ErrBadThreads) {
					t.Fatalf("SetThreads() error = %v, want ErrBadThreads", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("SetThreads(): %v", err)
			}
			if got != tc.want {
				t.Fatalf("SetThreads() = %d threads, want %d", got, tc.want)
			}
		})
	}
}
