package graph

import (
	"runtime"
	"strings"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// TestStickyError: after a failing op, later ops return nil without calling
// libtorch, and Err names the first failure.
func TestStickyError(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	g := New()
	defer g.Drop()
	a := g.Own(ts.MustOnes([]int64{2, 3}, gotch.Float, gotch.CPU))
	b := g.Own(ts.MustOnes([]int64{4, 5}, gotch.Float, gotch.CPU))
	bad := g.Matmul(a, b) // 2×3 · 4×5: shape error from libtorch
	if bad != nil || g.Err() == nil || !strings.HasPrefix(g.Err().Error(), "matmul:") {
		t.Fatalf("matmul of mismatched shapes: %v, err %v", bad, g.Err())
	}
	first := g.Err()
	if out := g.Gelu(g.Add(bad, a)); out != nil || g.Err() != first {
		t.Fatalf("ops after an error ran: %v, err %v", out, g.Err())
	}
}

// TestDropFreesOwned: the Graph owns what its ops create, Keep hands a
// tensor to the caller, and Drop leaves the caller's inputs alone.
func TestDropFreesOwned(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	x := ts.MustOnes([]int64{2, 2}, gotch.Float, gotch.CPU)
	defer x.MustDrop()
	g := New()
	y := g.Scale(g.Tanh(x), 2)
	kept := g.Keep(g.AddScalar(y, 1))
	if g.Len() != 2 || g.Err() != nil {
		t.Fatalf("graph owns %d tensors (err %v), want 2 (tanh, scale)", g.Len(), g.Err())
	}
	g.Drop()
	if g.Len() != 0 {
		t.Fatal("Drop left tensors")
	}
	defer kept.MustDrop()
	if v := kept.Float64Values()[0]; v < 2.52 || v > 2.53 { // 2·tanh(1) + 1
		t.Fatalf("kept tensor = %v, want 2·tanh(1)+1", v)
	}
	if v := x.Float64Values()[0]; v != 1 {
		t.Fatalf("input changed to %v", v)
	}
}
