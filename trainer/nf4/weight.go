package nf4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"

	"github.com/sugarme/gotch"
	lib "github.com/sugarme/gotch/libtch"
	"github.com/sugarme/gotch/ts"

	"github.com/loraft/loraft/trainer/libtorch"
)

// Weight is a Quantized tensor held as libtorch tensors on one device, ready
// to be rebuilt by Dequantize in every forward pass.
//
// Dequantize only reads the weight's tensors, so several goroutines may call
// it at once; Drop must not run concurrently with any other method.
type Weight struct {
	shape       []int64
	n           int64 // elements
	nBlocks     int64 // NF4 blocks
	doubleQuant bool
	device      gotch.Device
	stored      int // bytes of the per-weight tensors below

	packed *ts.Tensor // uint8 [nBlocks*BlockSize/2], padded with 0x77 to whole blocks
	pairs  *ts.Tensor // int64 [256]: float32 codebook pairs, see codebookPairs

	absmax *ts.Tensor // float32 [nBlocks, 1]; nil with double quantization

	absmaxCodes *ts.Tensor // uint8 [nScales*AbsmaxBlockSize], padded with the code of 0.0
	scales      *ts.Tensor // float32 [nScales, 1]
	offset      *ts.Tensor // float32 [1]
	dynMap      *ts.Tensor // float32 [256]
}

// Upload copies q's quantized state to device as libtorch tensors: the packed
// codes and absmax codes as uint8, the absmax (or DQ scales and offset) and
// the dynamic map as float32, and the codebook as a table of code pairs (see
// Dequantize). The caller owns the Weight and must Drop it.
func (q *Quantized) Upload(device gotch.Device) (w *Weight, err error) {
	if err := q.Validate(); err != nil {
		return nil, fmt.Errorf("nf4 upload: %w", err)
	}
	runtime.LockOSThread() // gotch's error state is per OS thread
	defer runtime.UnlockOSThread()

	nBlocks := (q.N + BlockSize - 1) / BlockSize
	w = &Weight{
		shape:       slices.Clone(q.Shape),
		n:           int64(q.N),
		nBlocks:     int64(nBlocks),
		doubleQuant: q.DoubleQuant,
		device:      device,
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, w.drop())
			w = nil
		}
	}()

	// Pad the codes to whole blocks so that the codes view as [nBlocks, 64];
	// the padding is cut off after scaling.
	packed := make([]byte, nBlocks*BlockSize/2)
	copy(packed, q.Packed)
	for i := len(q.Packed); i < len(packed); i++ {
		packed[i] = zeroCode<<4 | zeroCode
	}
	if w.packed, err = upload(packed, device, "packed codes"); err != nil {
		return nil, err
	}
	w.stored = len(packed)
	pairs := codebookPairs()
	if w.pairs, err = upload(pairs[:], device, "codebook pairs"); err != nil {
		return nil, err
	}

	if !q.DoubleQuant {
		if w.absmax, err = uploadView(q.Absmax, []int64{int64(nBlocks), 1}, device, "absmax"); err != nil {
			return nil, err
		}
		w.stored += 4 * len(q.Absmax)
		return w, nil
	}

	nScales := len(q.AbsmaxScales)
	codes := make([]uint8, nScales*AbsmaxBlockSize)
	copy(codes, q.AbsmaxCodes)
	for i := len(q.AbsmaxCodes); i < len(codes); i++ {
		codes[i] = dynamicZeroCode
	}
	if w.absmaxCodes, err = upload(codes, device, "absmax codes"); err != nil {
		return nil, err
	}
	if w.scales, err = uploadView(q.AbsmaxScales, []int64{int64(nScales), 1}, device, "absmax scales"); err != nil {
		return nil, err
	}
	if w.offset, err = upload([]float32{q.AbsmaxOffset}, device, "absmax offset"); err != nil {
		return nil, err
	}
	if w.dynMap, err = upload(dynamicMap[:], device, "dynamic map"); err != nil {
		return nil, err
	}
	w.stored += len(codes) + 4*nScales + 4
	return w, nil
}

// codebookPairs is the codebook indexed by whole bytes: entry b holds the
// float32 values of both of b's codes, Codebook[b>>4] then Codebook[b&0xF],
// in native byte order, so that a tensor of entries reinterpreted as float32
// is the sequence of decoded elements. Looking up bytes in it unpacks and
// decodes both nibbles with one index_select over half as many indices.
func codebookPairs() [256]int64 {
	var pairs [256]int64
	var b [8]byte
	for v := range pairs {
		binary.NativeEndian.PutUint32(b[:4], math.Float32bits(codebook[v>>4]))
		binary.NativeEndian.PutUint32(b[4:], math.Float32bits(codebook[v&0xF]))
		pairs[v] = int64(binary.NativeEndian.Uint64(b[:]))
	}
	return pairs
}

// upload makes a 1-D tensor of data on device.
func upload[T uint8 | int64 | float32](data []T, device gotch.Device, what string) (*ts.Tensor, error) {
	t, err := ts.OfSlice(data)
	if err != nil {
		return nil, fmt.Errorf("nf4 upload %s: %w", what, err)
	}
	if device == gotch.CPU {
		return t, nil
	}
	d, err := t.To(device, false)
	if derr := t.Drop(); err == nil && derr != nil {
		err = derr
	}
	if err != nil {
		dropIfSet(d)
		return nil, fmt.Errorf("nf4 upload %s to %v: %w", what, device, err)
	}
	return d, nil
}

// uploadView uploads data and views it with shape.
func uploadView(data []float32, shape []int64, device gotch.Device, what string) (*ts.Tensor, error) {
	t, err := upload(data, device, what)
	if err != nil {
		return nil, err
	}
	v, err := t.View(shape, false)
	if derr := t.Drop(); err == nil && derr != nil {
		err = derr
	}
	if err != nil {
		dropIfSet(v)
		return nil, fmt.Errorf("nf4 upload %s: view as %v: %w", what, shape, err)
	}
	return v, nil
}

// Shape returns the shape of the tensor Dequantize builds.
func (w *Weight) Shape() []int64 { return slices.Clone(w.shape) }

// Device returns the device the weight's tensors live on.
func (w *Weight) Device() gotch.Device { return w.device }

// DoubleQuant reports whether the absmax vector is double-quantized.
func (w *Weight) DoubleQuant() bool { return w.doubleQuant }

// StoredBytes is the size of the weight's own quantized state on the device:
// the packed codes and the absmax statistics, each padded to whole blocks (64
// elements; 256 absmax codes). It equals Quantized.StoredBytes when the
// element count is a multiple of 64 (and, with double quantization, the block
// count a multiple of 256), as for every BERT Linear weight. The constant
// tables (codebook pairs, dynamic map; 3 KiB) are not counted.
func (w *Weight) StoredBytes() int { return w.stored }

// Drop frees the weight's tensors. It is safe to call more than once; the
// Weight cannot be used afterwards.
func (w *Weight) Drop() error {
	if w == nil {
		return nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := w.drop(); err != nil {
		return fmt.Errorf("nf4 drop weight: %w", err)
	}
	return nil
}

func (w *Weight) drop() error {
	var errs []error
	for _, t := range []**ts.Tensor{&w.packed, &w.pairs, &w.absmax, &w.absmaxCodes, &w.scales, &w.offset, &w.dynMap} {
		if *t != nil {
			errs = append(errs, (*t).Drop())
			*t = nil
		}
	}
	return errors.Join(errs...)
}

// Dequantize builds the weight as a new tensor of the weight's shape in dtype
// (gotch.Float or gotch.BFloat16) on the weight's device: each packed byte's
// two codes decoded through the codebook and each block of 64 scaled by its
// absmax, itself rebuilt from its code under double quantization. The
// arithmetic is in float32, so a Float result equals Quantized.Dequantize bit
// for bit; a BFloat16 result is that value rounded to nearest even.
//
// It is one call into libtch.so (loraft_nf4_dequantize in
// deploy/gotch/loraft_ext.cpp). On CPU that is a fused loop that reads the
// codes once and writes the result once: for bert-base's 85M frozen
// parameters 52 ms per forward pass in fp32 and 62 ms in bf16 on a 2-core
// CPU, against 217 and 266 ms for the tensor ops (bench/results/dequant.json),
// which make four full-size intermediates. On other devices it runs those
// tensor ops (DequantizeOps), from C++ so that a weight costs one cgo call.
//
// It runs with gradient tracking off (libtorch.NoGrad, which restores the
// thread's previous mode), so the result never requires grad. The caller
// owns the result and must drop it.
func (w *Weight) Dequantize(dtype gotch.DType) (*ts.Tensor, error) {
	return w.dequantize(dtype, w.device == gotch.CPU)
}

// DequantizeOps is Dequantize by the tensor ops it takes off CPU, on any
// device, for benchmarks and tests that compare the two ways on CPU.
func (w *Weight) DequantizeOps(dtype gotch.DType) (*ts.Tensor, error) {
	return w.dequantize(dtype, false)
}

func (w *Weight) dequantize(dtype gotch.DType, fused bool) (*ts.Tensor, error) {
	if w == nil || w.packed == nil {
		return nil, fmt.Errorf("nf4 dequantize: %w", ErrDropped)
	}
	if dtype != gotch.Float && dtype != gotch.BFloat16 {
		return nil, fmt.Errorf("nf4 dequantize: %w: %v (want Float or BFloat16)", ErrDType, dtype)
	}
	runtime.LockOSThread() // grad mode and gotch's error state are per OS thread
	defer runtime.UnlockOSThread()
	defer libtorch.NoGrad()() // restores the caller's mode
	var out lib.Ctensor
	lib.LoraftNF4Dequantize(&out, ctensor(w.packed), ctensor(w.pairs), ctensor(w.absmax), ctensor(w.absmaxCodes),
		ctensor(w.scales), ctensor(w.offset), ctensor(w.dynMap), w.n, w.shape, int32(dtype.CKind()), fused)
	if err := ts.TorchErr(); err != nil {
		return nil, fmt.Errorf("nf4 dequantize: %w", err)
	}
	return ts.New(out), nil
}

// Linear is the frozen linear layer x·Wᵀ + bias (no bias when nil) for a
// 2-D weight W of shape [out, in], in x's dtype (gotch.Float or
// gotch.BFloat16; bias must have it too), as bitsandbytes' 4-bit matmul
// does it: W is dequantized as Dequantize would, used and dropped, and
// backward dequantizes it again for x's gradient dY·W instead of autograd
// keeping it between the passes. So training holds only the packed 4-bit
// weight: bert-base's 73 frozen Linears no longer keep 342 MB of fp32 W
// (171 MB in bf16). W and bias get no gradient; x's gradient equals the
// one a plain linear on Dequantize's W gives.
//
// The caller owns the result and must drop it.
func (w *Weight) Linear(x, bias *ts.Tensor) (*ts.Tensor, error) {
	if w == nil || w.packed == nil {
		return nil, fmt.Errorf("nf4 linear: %w", ErrDropped)
	}
	if len(w.shape) != 2 {
		return nil, fmt.Errorf("nf4 linear: weight of shape %v, want [out, in]", w.shape)
	}
	if x == nil {
		return nil, fmt.Errorf("nf4 linear: no input")
	}
	if dt := x.DType(); dt != gotch.Float && dt != gotch.BFloat16 {
		return nil, fmt.Errorf("nf4 linear: %w: input %v (want Float or BFloat16)", ErrDType, dt)
	}
	runtime.LockOSThread() // gotch's error state is per OS thread
	defer runtime.UnlockOSThread()
	var out lib.Ctensor
	lib.LoraftNF4Linear(&out, ctensor(x), ctensor(bias), ctensor(w.packed), ctensor(w.pairs), ctensor(w.absmax),
		ctensor(w.absmaxCodes), ctensor(w.scales), ctensor(w.offset), ctensor(w.dynMap), w.n, w.shape, w.device == gotch.CPU)
	if err := ts.TorchErr(); err != nil {
		return nil, fmt.Errorf("nf4 linear: %w", err)
	}
	return ts.New(out), nil
}

// ctensor is t's C handle, or nil for an absent tensor.
func ctensor(t *ts.Tensor) lib.Ctensor {
	if t == nil {
		return nil
	}
	return lib.Ctensor(t.Ctensor())
}

// dropIfSet drops t unless it is nil; for clean-up paths that already report
// an error.
func dropIfSet(t *ts.Tensor) {
	if t != nil {
		_ = t.Drop()
	}
}
