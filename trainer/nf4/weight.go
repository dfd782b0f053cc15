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
// On CPU it is one call into libtch.so (loraft_nf4_dequantize in
// deploy/gotch/loraft_ext.cpp): a fused loop that reads the codes once and
// writes the result once: for bert-base's 85M frozen parameters 51 ms per
// forward pass in fp32 and 66 ms in bf16 on a 2-core CPU, against 215 and
// 333 ms for the tensor ops it replaces, which make four full-size
// intermediates and pay gotch's per-op cost a dozen times
// (bench/results/dequant.json). On other devices it runs those
// tensor ops (DequantizeOps).
//
// It runs with gradient tracking off (libtorch.NoGrad, which restores the
// thread's previous mode), so the result never requires grad. The caller
// owns the result and must drop it; every intermediate tensor is dropped
// before Dequantize returns.
func (w *Weight) Dequantize(dtype gotch.DType) (*ts.Tensor, error) {
	return w.dequantize(dtype, w.device == gotch.CPU)
}

// DequantizeOps is Dequantize by the tensor ops it takes off CPU, on any
// device, for benchmarks and tests that compare the two paths on CPU.
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
	if fused {
		return w.dequantizeFused(dtype)
	}
	return w.dequantizeOps(dtype)
}

// dequantizeFused is Dequantize's CPU path; the caller has locked its OS
// thread.
func (w *Weight) dequantizeFused(dtype gotch.DType) (*ts.Tensor, error) {
	c := func(t *ts.Tensor) lib.Ctensor {
		if t == nil {
			return nil
		}
		return lib.Ctensor(t.Ctensor())
	}
	var out lib.Ctensor
	lib.LoraftNF4Dequantize(&out, c(w.packed), c(w.pairs), c(w.absmax), c(w.absmaxCodes), c(w.scales), c(w.offset),
		c(w.dynMap), w.n, w.shape, int32(dtype.CKind()))
	if err := ts.TorchErr(); err != nil {
		return nil, fmt.Errorf("nf4 dequantize: %w", err)
	}
	return ts.New(out), nil
}

// dequantizeOps is Dequantize with libtorch tensor ops only, for any
// device; the caller has locked its OS thread. Every packed byte is looked
// up in a 256-entry table holding the codebook values of both its nibbles
// (one index_select unpacks and decodes; about 2.5x faster than shifting and
// masking the nibbles and looking each up), then each block is scaled.
func (w *Weight) dequantizeOps(dtype gotch.DType) (out *ts.Tensor, err error) {
	var s scope
	defer func() {
		if derr := s.drop(); derr != nil && err == nil {
			dropIfSet(out)
			out, err = nil, fmt.Errorf("nf4 dequantize: drop intermediates: %w", derr)
		}
	}()

	absmax, err := w.blockAbsmax(&s) // [nBlocks, 1]
	if err != nil {
		return nil, fmt.Errorf("nf4 dequantize: absmax: %w", err)
	}
	// Decode: each byte of the [B] packed codes selects its pair of codebook
	// values (int64 [B]), reinterpreted as the float32 elements [2B] in
	// order; each block of 64 is then scaled by its absmax. int32 indices
	// are half the bytes of int64 ones.
	vals, err := s.chain(w.packed,
		func(t *ts.Tensor) (*ts.Tensor, error) { return t.Totype(gotch.Int, false) },
		func(t *ts.Tensor) (*ts.Tensor, error) { return w.pairs.IndexSelect(0, t, false) },
		func(t *ts.Tensor) (*ts.Tensor, error) { return t.ViewDtype(gotch.Float, false) },
		func(t *ts.Tensor) (*ts.Tensor, error) { return t.View([]int64{w.nBlocks, BlockSize}, false) },
		func(t *ts.Tensor) (*ts.Tensor, error) { return t.Mul(absmax, false) },
	)
	if err != nil {
		return nil, fmt.Errorf("nf4 dequantize: codes: %w", err)
	}
	if w.n != w.nBlocks*BlockSize { // cut the padding of a short last block
		vals, err = s.chain(vals,
			func(t *ts.Tensor) (*ts.Tensor, error) { return t.View([]int64{-1}, false) },
			func(t *ts.Tensor) (*ts.Tensor, error) { return t.Narrow(0, 0, w.n, false) },
		)
		if err != nil {
			return nil, fmt.Errorf("nf4 dequantize: trim padding: %w", err)
		}
	}
	if dtype != gotch.Float {
		vals, err = s.chain(vals, func(t *ts.Tensor) (*ts.Tensor, error) { return t.Totype(dtype, false) })
		if err != nil {
			return nil, fmt.Errorf("nf4 dequantize: convert to %v: %w", dtype, err)
		}
	}
	out, err = vals.Reshape(w.shape, false)
	if err != nil {
		return nil, fmt.Errorf("nf4 dequantize: reshape to %v: %w", w.shape, err)
	}
	return out, nil
}

// blockAbsmax returns the absmax per block as a [nBlocks, 1] tensor, owned by
// s: the stored one, or under double quantization DynamicMap[code] * scale +
// offset, computed per block of 256 codes (padding cut off afterwards).
func (w *Weight) blockAbsmax(s *scope) (*ts.Tensor, error) {
	if !w.doubleQuant {
		return w.absmax, nil
	}
	a, err := s.chain(w.absmaxCodes,
		func(t *ts.Tensor) (*ts.Tensor, error) { return t.Totype(gotch.Int64, false) },
		func(t *ts.Tensor) (*ts.Tensor, error) { return w.dynMap.IndexSelect(0, t, false) },
		func(t *ts.Tensor) (*ts.Tensor, error) { return t.View([]int64{-1, AbsmaxBlockSize}, false) },
		func(t *ts.Tensor) (*ts.Tensor, error) { return t.Mul(w.scales, false) },
		func(t *ts.Tensor) (*ts.Tensor, error) { return t.Add(w.offset, false) },
	)
	if err != nil {
		return nil, err
	}
	if w.nBlocks%AbsmaxBlockSize != 0 { // every op costs ~20-40 µs in gotch: skip when aligned
		a, err = s.chain(a,
			func(t *ts.Tensor) (*ts.Tensor, error) { return t.View([]int64{-1}, false) },
			func(t *ts.Tensor) (*ts.Tensor, error) { return t.Narrow(0, 0, w.nBlocks, false) },
		)
		if err != nil {
			return nil, err
		}
	}
	return s.chain(a, func(t *ts.Tensor) (*ts.Tensor, error) { return t.View([]int64{w.nBlocks, 1}, false) })
}

// scope owns the intermediate tensors of one computation and drops them all
// at the end.
type scope struct {
	tensors []*ts.Tensor
}

// chain applies ops in turn, starting from t, and returns the last result.
// Every result belongs to s (t itself is not taken over).
func (s *scope) chain(t *ts.Tensor, ops ...func(*ts.Tensor) (*ts.Tensor, error)) (*ts.Tensor, error) {
	for _, op := range ops {
		next, err := op(t)
		if err != nil {
			dropIfSet(next)
			return nil, err
		}
		s.tensors = append(s.tensors, next)
		t = next
	}
	return t, nil
}

func (s *scope) drop() error {
	var errs []error
	for _, t := range s.tensors {
		errs = append(errs, t.Drop())
	}
	s.tensors = nil
	return errors.Join(errs...)
}

// dropIfSet drops t unless it is nil; for clean-up paths that already report
// an error.
func dropIfSet(t *ts.Tensor) {
	if t != nil {
		_ = t.Drop()
	}
}
