package libtorch

import (
	"fmt"
	"unsafe"

	"github.com/sugarme/gotch"
	lib "github.com/sugarme/gotch/libtch"
	"github.com/sugarme/gotch/ts"
)

// TensorOf makes a CPU tensor of shape holding a copy of data, copied once,
// straight from Go memory. gotch's NewTensorFromData copies three times on
// the way (a reflective flatten and binary.Write's buffer, both garbage for
// the Go GC, and a C buffer), which made uploading bert-base's weights peak
// at several times their size. The caller must be locked to its OS thread
// (gotch's error state is per thread) and owns the result.
func TensorOf[T float32 | int64](data []T, shape []int64) (*ts.Tensor, error) {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	if n != int64(len(data)) {
		return nil, fmt.Errorf("tensor of %d elements for shape %v", len(data), shape)
	}
	if len(data) == 0 || len(shape) == 0 {
		return ts.NewTensorFromData(data, shape) // nothing large to copy
	}
	var zero T
	dtype := gotch.Float
	if _, ok := any(zero).(int64); ok {
		dtype = gotch.Int64
	}
	// Passing a pointer to pointer-free Go memory for the duration of the
	// call is allowed by cgo's rules; at_tensor_of_data memcpys from it.
	c := lib.AtTensorOfData(unsafe.Pointer(&data[0]), shape, uint(len(shape)), uint(unsafe.Sizeof(zero)), int(dtype.CKind()))
	if err := ts.TorchErr(); err != nil {
		return nil, fmt.Errorf("tensor of %v: %w", shape, err)
	}
	return ts.New(c), nil
}
