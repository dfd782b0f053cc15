// Package torchbin reads PyTorch state dicts saved with torch.save — HF's
// pytorch_model.bin, in the zip format (PyTorch ≥ 1.6) or the legacy one —
// without running any pickled code. The pickle is decoded by
// github.com/nlpodyssey/gopickle with a class allow-list: tensor storages
// (torch.FloatStorage, HalfStorage, BFloat16Storage, …), collections.OrderedDict
// and torch._utils' tensor and parameter rebuild functions, all implemented
// here in Go. Any other class is refused with an error naming it, before the
// unpickler could call it. (gopickle itself maps __builtin__.object and
// copy_reg._reconstructor to inert Go types; whatever a pickle builds that
// is not a tensor is refused too.) Every size a file declares is checked
// against the bytes it has before anything is allocated.
package torchbin

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/nlpodyssey/gopickle/pickle"
	"github.com/nlpodyssey/gopickle/types"
)

// Limits on what a file may declare. A real state dict is far inside them.
const (
	// MaxPickleBytes bounds the pickle (data.pkl) of one file: bert-base's
	// is ~25 KB, one per tensor name.
	MaxPickleBytes = 64 << 20
	// MaxStorageBytes bounds one tensor storage (a 250k × 4096 fp32
	// embedding is 4 GB).
	MaxStorageBytes = 16 << 30
	// MaxTensors bounds the entries of one state dict.
	MaxTensors = 1 << 20
	// MaxDims bounds a tensor's rank.
	MaxDims = 16
	// MaxLegacyBytes bounds a file in torch's pre-1.6 format, which is read
	// into memory whole (bert-large in fp32 is 1.3 GB).
	MaxLegacyBytes = 32 << 30
)

// Errors, compared with errors.Is.
var (
	// ErrRefused reports pickle content outside the allow-list: a class or
	// function a state dict does not need, which a Python unpickler would
	// have imported and called.
	ErrRefused = errors.New("refused pickle content")
	// ErrFormat reports a file that is not a well-formed PyTorch state dict.
	ErrFormat = errors.New("malformed PyTorch checkpoint")
)

// DType names an element type as safetensors does.
type DType string

// The storage types torch.save writes, by their safetensors names.
const (
	F64  DType = "F64"
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	I64  DType = "I64"
	I32  DType = "I32"
	I16  DType = "I16"
	I8   DType = "I8"
	U8   DType = "U8"
	Bool DType = "BOOL"
)

// storageTypes maps torch's storage classes to element types and sizes.
var storageTypes = map[string]struct {
	dtype DType
	size  int
}{
	"DoubleStorage": {F64, 8}, "FloatStorage": {F32, 4}, "HalfStorage": {F16, 2},
	"BFloat16Storage": {BF16, 2}, "LongStorage": {I64, 8}, "IntStorage": {I32, 4},
	"ShortStorage": {I16, 2}, "CharStorage": {I8, 1}, "ByteStorage": {U8, 1}, "BoolStorage": {Bool, 1},
}

// Info describes one tensor of a file.
type Info struct {
	DType DType
	Shape []int64
}

// tensor is a strided view of a storage, as _rebuild_tensor_v2 builds it.
type tensor struct {
	dtype   DType
	size    int // bytes per element
	shape   []int64
	stride  []int64
	offset  int64
	storage *storage
}

// storage is one torch storage's raw little-endian bytes.
type storage struct {
	class *storageClass
	key   string
	numel int64
	data  []byte // nil until read (legacy files read storages after the pickle)
}

// File is a loaded state dict: tensor names in file order and their data.
type File struct {
	name    string
	names   []string
	tensors map[string]*tensor
}

// Open reads a torch.save file.
func Open(p string) (*File, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("opening PyTorch checkpoint: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("opening PyTorch checkpoint: %w", err)
	}
	return Parse(f, st.Size(), p)
}

// Parse reads a torch.save file of size bytes from r; name appears in errors.
func Parse(r io.ReaderAt, size int64, name string) (*File, error) {
	var head [4]byte
	if _, err := r.ReadAt(head[:], 0); err != nil {
		return nil, fmt.Errorf("%w: %s: reading the first bytes: %v", ErrFormat, name, err)
	}
	if string(head[:]) == "PK\x03\x04" {
		return parseZip(r, size, name)
	}
	if head[0] == 0x80 { // a pickle's PROTO opcode: the legacy format
		return parseLegacy(r, size, name)
	}
	return nil, fmt.Errorf("%w: %s is neither a zip nor a pickle (a TorchScript, tar or safetensors file?)", ErrFormat, name)
}

// Names lists the tensors in file order.
func (f *File) Names() []string { return slices.Clone(f.names) }

// Info describes the named tensor.
func (f *File) Info(name string) (Info, error) {
	t, ok := f.tensors[name]
	if !ok {
		return Info{}, fmt.Errorf("%s: no tensor %q", f.name, name)
	}
	return Info{DType: t.dtype, Shape: slices.Clone(t.shape)}, nil
}

func parseZip(r io.ReaderAt, size int64, name string) (*File, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrFormat, name, err)
	}
	var pkl *zip.File
	records := map[string]*zip.File{}
	for _, zf := range zr.File {
		records[zf.Name] = zf
		if path.Base(zf.Name) == "constants.pkl" {
			return nil, fmt.Errorf("%w: %s is a TorchScript archive, not a state dict", ErrFormat, name)
		}
		if path.Base(zf.Name) == "data.pkl" && strings.Count(zf.Name, "/") == 1 {
			if pkl != nil {
				return nil, fmt.Errorf("%w: %s has two data.pkl records", ErrFormat, name)
			}
			pkl = zf
		}
	}
	if pkl == nil {
		return nil, fmt.Errorf("%w: %s: zip without <dir>/data.pkl", ErrFormat, name)
	}
	prefix := path.Dir(pkl.Name) + "/"
	if bo, ok := records[prefix+"byteorder"]; ok {
		if bo.UncompressedSize64 > 16 {
			return nil, fmt.Errorf("%w: %s: byteorder record of %d bytes", ErrFormat, name, bo.UncompressedSize64)
		}
		b, err := readRecord(bo, int64(bo.UncompressedSize64), name)
		if err != nil {
			return nil, err
		}
		if string(b) != "little" {
			return nil, fmt.Errorf("%w: %s: byteorder %q, only little-endian files are supported", ErrFormat, name, b)
		}
	}
	if pkl.UncompressedSize64 > MaxPickleBytes {
		return nil, fmt.Errorf("%w: %s: data.pkl is %d bytes, over the %d limit", ErrFormat, name, pkl.UncompressedSize64, MaxPickleBytes)
	}
	data, err := readRecord(pkl, int64(pkl.UncompressedSize64), name)
	if err != nil {
		return nil, err
	}
	storages := map[string]*storage{}
	loadStorage := func(pid []any) (*storage, error) {
		// ('storage', storage class, key, location, numel)
		if len(pid) != 5 {
			return nil, fmt.Errorf("persistent id has %d fields, want 5", len(pid))
		}
		cls, key, numel, err := storageID(pid)
		if err != nil {
			return nil, err
		}
		if s, ok := storages[key]; ok {
			if s.class.name != cls.name || s.numel != numel {
				return nil, fmt.Errorf("storage %s is used as %s × %d and %s × %d", key, s.class.name, s.numel, cls.name, numel)
			}
			return s, nil
		}
		rec, ok := records[prefix+"data/"+key]
		if !ok {
			return nil, fmt.Errorf("no zip record %sdata/%s for storage %s", prefix, key, key)
		}
		if rec.Method != zip.Store {
			// torch.save stores tensors uncompressed (it aligns them for mmap);
			// refusing compression bounds every storage by the file's size.
			return nil, fmt.Errorf("storage record %s is compressed (method %d); torch.save writes them stored", rec.Name, rec.Method)
		}
		nbytes := numel * int64(cls.size)
		if rec.UncompressedSize64 != uint64(nbytes) {
			return nil, fmt.Errorf("storage record %s has %d bytes, %s × %d needs %d", rec.Name, rec.UncompressedSize64, cls.name, numel, nbytes)
		}
		b, err := readRecord(rec, nbytes, name)
		if err != nil {
			return nil, err
		}
		s := &storage{class: cls, key: key, numel: numel, data: b}
		storages[key] = s
		return s, nil
	}
	f, err := unpickleStateDict(data, name, loadStorage)
	if err != nil {
		return nil, err
	}
	return f, f.check()
}

// readRecord reads a zip record of exactly n bytes.
func readRecord(zf *zip.File, n int64, name string) ([]byte, error) {
	if zf.UncompressedSize64 != uint64(n) {
		return nil, fmt.Errorf("%w: %s: record %s has %d bytes, want %d", ErrFormat, name, zf.Name, zf.UncompressedSize64, n)
	}
	rc, err := zf.Open()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: record %s: %v", ErrFormat, name, zf.Name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, n))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: record %s: %v", ErrFormat, name, zf.Name, err)
	}
	if int64(len(b)) != n {
		return nil, fmt.Errorf("%w: %s: record %s ends after %d of %d bytes", ErrFormat, name, zf.Name, len(b), n)
	}
	return b, nil
}

// storageID checks the storage class, key and element count of a
// persistent id ('storage', class, key, location, numel, …).
func storageID(pid []any) (*storageClass, string, int64, error) {
	cls, ok := pid[1].(*storageClass)
	if !ok {
		return nil, "", 0, fmt.Errorf("storage type %s, want a torch storage class", describe(pid[1]))
	}
	key, ok := pid[2].(string)
	if !ok || key == "" || strings.ContainsAny(key, "/\\") || key == "." || key == ".." {
		return nil, "", 0, fmt.Errorf("storage key %s", describe(pid[2]))
	}
	if _, ok := pid[3].(string); !ok {
		return nil, "", 0, fmt.Errorf("storage location %s, want a string", describe(pid[3]))
	}
	numel, ok := pid[4].(int)
	if !ok || numel < 0 || int64(numel) > MaxStorageBytes/int64(cls.size) {
		return nil, "", 0, fmt.Errorf("storage %s has %s elements, want 0 to %d", key, describe(pid[4]), MaxStorageBytes/int64(cls.size))
	}
	return cls, key, int64(numel), nil
}

// unpickleStateDict decodes a state dict pickle; load resolves the
// persistent id of each storage.
func unpickleStateDict(data []byte, name string, load func(pid []any) (*storage, error)) (f *File, err error) {
	n, err := scanPickle(data, name)
	if err != nil {
		return nil, err
	}
	v, err := unpickle(data[:n], name, load)
	if err != nil {
		return nil, err
	}
	var entries [][2]any
	switch d := v.(type) {
	case *types.OrderedDict:
		for e := d.List.Front(); e != nil; e = e.Next() {
			kv := e.Value.(*types.OrderedDictEntry)
			entries = append(entries, [2]any{kv.Key, kv.Value})
		}
	case *types.Dict:
		for _, e := range *d {
			entries = append(entries, [2]any{e.Key, e.Value})
		}
	default:
		return nil, fmt.Errorf("%w: %s holds %s, want a state dict (a dict of tensors)", ErrFormat, name, describe(v))
	}
	if len(entries) > MaxTensors {
		return nil, fmt.Errorf("%w: %s has %d entries, over the %d limit", ErrFormat, name, len(entries), MaxTensors)
	}
	f = &File{name: name, tensors: map[string]*tensor{}}
	for _, e := range entries {
		k, ok := e[0].(string)
		if !ok {
			return nil, fmt.Errorf("%w: %s: key %s, want a string", ErrFormat, name, describe(e[0]))
		}
		t, ok := e[1].(*tensor)
		if !ok {
			return nil, fmt.Errorf("%w: %s: %q is %s, want a tensor", ErrFormat, name, k, describe(e[1]))
		}
		if _, dup := f.tensors[k]; dup {
			return nil, fmt.Errorf("%w: %s: tensor %q twice", ErrFormat, name, k)
		}
		f.names = append(f.names, k)
		f.tensors[k] = t
	}
	return f, nil
}

// unpickle runs gopickle on a scanned pickle. gopickle is not written for
// hostile input: a panic inside it becomes an error, not a crash.
func unpickle(data []byte, name string, load func(pid []any) (*storage, error)) (v any, err error) {
	defer func() {
		if p := recover(); p != nil {
			v, err = nil, fmt.Errorf("%w: %s: unpickler: %v", ErrFormat, name, p)
		}
	}()
	u := pickle.NewUnpickler(bytes.NewReader(data))
	u.FindClass = func(module, cls string) (any, error) { return findClass(name, module, cls) }
	u.PersistentLoad = func(id any) (any, error) {
		t, ok := id.(*types.Tuple)
		if !ok || t.Len() < 5 {
			return nil, fmt.Errorf("%w: %s: persistent id %s, want ('storage', …)", ErrFormat, name, describe(id))
		}
		pid := []any(*t)
		if s, _ := pid[0].(string); s != "storage" {
			return nil, fmt.Errorf("%w: %s: persistent id of type %s, only storages are allowed", ErrRefused, name, describe(pid[0]))
		}
		s, err := load(pid)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrFormat, name, err)
		}
		return s, nil
	}
	u.GetExtension = func(code int) (any, error) {
		return nil, fmt.Errorf("%w: %s: pickle extension code %d", ErrRefused, name, code)
	}
	u.NextBuffer = func() (any, error) {
		return nil, fmt.Errorf("%w: %s: out-of-band pickle buffer", ErrRefused, name)
	}
	v, err = u.Load()
	if err != nil {
		if errors.Is(err, ErrRefused) || errors.Is(err, ErrFormat) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrFormat, name, err)
	}
	return v, nil
}

// check verifies that every tensor's view lies inside its storage and that
// every storage was read.
func (f *File) check() error {
	for _, n := range f.names {
		t := f.tensors[n]
		if t.storage.data == nil {
			return fmt.Errorf("%w: %s: storage %s of %q was never written", ErrFormat, f.name, t.storage.key, n)
		}
		if t.storage.class.dtype != t.dtype {
			return fmt.Errorf("%w: %s: %q is %s on a %s storage", ErrFormat, f.name, n, t.dtype, t.storage.class.name)
		}
	}
	return nil
}

// Float32 returns the named tensor as a dense row-major float32 slice, with
// its shape. Float types convert exactly (F64 rounds); integer and bool
// tensors are refused.
func (f *File) Float32(name string) ([]float32, []int64, error) {
	t, ok := f.tensors[name]
	if !ok {
		return nil, nil, fmt.Errorf("%s: no tensor %q", f.name, name)
	}
	var conv func(b []byte) float32
	switch t.dtype {
	case F32:
		conv = func(b []byte) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b)) }
	case F64:
		conv = func(b []byte) float32 { return float32(math.Float64frombits(binary.LittleEndian.Uint64(b))) }
	case F16:
		conv = func(b []byte) float32 { return f16ToFloat32(binary.LittleEndian.Uint16(b)) }
	case BF16:
		conv = func(b []byte) float32 { return math.Float32frombits(uint32(binary.LittleEndian.Uint16(b)) << 16) }
	default:
		return nil, nil, fmt.Errorf("%s: tensor %q is %s, not a float type", f.name, name, t.dtype)
	}
	n := int64(1)
	for _, d := range t.shape {
		n *= d
	}
	out := make([]float32, n)
	if n == 0 {
		return out, slices.Clone(t.shape), nil
	}
	el := int64(t.size)
	if t.contiguous() { // the usual case: one pass over the bytes
		b := t.storage.data[t.offset*el : (t.offset+n)*el]
		if t.dtype == F32 { // the common case, without a call per element
			for i := range out {
				out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
			}
			return out, slices.Clone(t.shape), nil
		}
		for i := range out {
			out[i] = conv(b[int64(i)*el:])
		}
		return out, slices.Clone(t.shape), nil
	}
	idx := make([]int64, len(t.shape))
	for i := range out {
		off := t.offset
		for d, k := range idx {
			off += k * t.stride[d]
		}
		out[i] = conv(t.storage.data[off*el : (off+1)*el])
		for d := len(idx) - 1; d >= 0; d-- { // next index, row-major
			idx[d]++
			if idx[d] < t.shape[d] {
				break
			}
			idx[d] = 0
		}
	}
	return out, slices.Clone(t.shape), nil
}

// contiguous reports whether t's strides are row-major for its shape
// (dimensions of size 1 may have any stride).
func (t *tensor) contiguous() bool {
	want := int64(1)
	for d := len(t.shape) - 1; d >= 0; d-- {
		if t.shape[d] != 1 && t.stride[d] != want {
			return false
		}
		want *= t.shape[d]
	}
	return true
}

// f16ToFloat32 widens an IEEE half (subnormals, infinities and NaN kept).
func f16ToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | mant<<13)
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: mant × 2^-24
		v := float32(mant) / (1 << 24)
		if sign != 0 {
			v = -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}

// describe names a decoded pickle value's type for an error, never its
// contents (a hostile file's strings stay out of logs).
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case string:
		if len(x) <= 64 && !strings.ContainsFunc(x, func(r rune) bool { return r < 0x20 }) {
			return fmt.Sprintf("%q", x)
		}
		return fmt.Sprintf("a %d-byte string", len(x))
	case int:
		return fmt.Sprintf("%d", x)
	case *big.Int:
		return "a big integer"
	case *storageClass:
		return "torch." + x.name
	case *types.GenericClass:
		return x.Module + "." + x.Name
	}
	return fmt.Sprintf("a %T", v)
}
