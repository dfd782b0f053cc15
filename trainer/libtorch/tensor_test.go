package libtorch

import (
	"runtime"
	"slices"
	"testing"
)

// TestTensorOf: the tensor holds the data in row-major order with the
// shape and dtype asked for, for both element types, and a size mismatch
// is an error.
func TestTensorOf(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, err := TensorOf([]float32{1.5, -2, 3, 4.25, 5, 6}, []int64{2, 3})
	if err != nil {
		t.Fatal(err)
	}
	defer f.MustDrop()
	if got := f.Float64Values(); !slices.Equal(got, []float64{1.5, -2, 3, 4.25, 5, 6}) || !slices.Equal(f.MustSize(), []int64{2, 3}) || f.DType().String() != "Float" {
		t.Fatalf("float tensor %v %v %v", got, f.MustSize(), f.DType())
	}
	i, err := TensorOf([]int64{7, -8, 1 << 40}, []int64{3})
	if err != nil {
		t.Fatal(err)
	}
	defer i.MustDrop()
	if got := i.Int64Values(); !slices.Equal(got, []int64{7, -8, 1 << 40}) || i.DType().String() != "Int64" {
		t.Fatalf("int64 tensor %v %v", got, i.DType())
	}
	if _, err := TensorOf([]float32{1, 2, 3}, []int64{2, 2}); err == nil {
		t.Fatal("3 elements for shape [2 2] accepted")
	}
}
