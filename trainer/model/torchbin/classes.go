package torchbin

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/big"

	"github.com/nlpodyssey/gopickle/types"
)

// allowedGlobal reports whether a pickle may import module.name. These are
// the only names a state dict saved by torch.save refers to; each is
// implemented in Go here (collections.OrderedDict by gopickle), so nothing
// of the file's choosing ever runs.
func allowedGlobal(module, name string) bool {
	switch module {
	case "collections":
		return name == "OrderedDict"
	case "torch._utils":
		return name == "_rebuild_tensor_v2" || name == "_rebuild_parameter" || name == "_rebuild_parameter_with_state"
	case "torch":
		_, ok := storageTypes[name]
		return ok
	}
	return false
}

func refusedClass(file, module, name string) error {
	return fmt.Errorf("%w: %s: the pickle imports %s.%s; only tensor storages, collections.OrderedDict and torch._utils' tensor rebuild functions are allowed, nothing is executed",
		ErrRefused, file, printable(module), printable(name))
}

// printable keeps a hostile name readable and short in an error.
func printable(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	out := []rune{}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			r = '?'
		}
		out = append(out, r)
	}
	return string(out)
}

// findClass is the unpickler's import hook: allowed names map to Go values,
// every other one is refused.
func findClass(file, module, name string) (any, error) {
	if !allowedGlobal(module, name) {
		return nil, refusedClass(file, module, name)
	}
	switch module {
	case "torch":
		st := storageTypes[name]
		return &storageClass{name: name, dtype: st.dtype, size: st.size}, nil
	case "torch._utils":
		switch name {
		case "_rebuild_tensor_v2":
			return rebuildTensor{}, nil
		default:
			return rebuildParameter{}, nil
		}
	}
	// collections.OrderedDict never gets here: gopickle implements it.
	return nil, refusedClass(file, module, name)
}

// storageClass stands for torch.FloatStorage and its siblings; the
// persistent id of a storage names one.
type storageClass struct {
	name  string
	dtype DType
	size  int
}

// rebuildTensor is torch._utils._rebuild_tensor_v2(storage, storage_offset,
// size, stride, requires_grad, backward_hooks[, metadata]).
type rebuildTensor struct{}

var _ types.Callable = rebuildTensor{}

// Call builds a strided view of a storage, checked to lie inside it.
func (rebuildTensor) Call(args ...any) (any, error) {
	if len(args) != 6 && len(args) != 7 {
		return nil, fmt.Errorf("%w: _rebuild_tensor_v2 with %d arguments, want 6 or 7", ErrFormat, len(args))
	}
	s, ok := args[0].(*storage)
	if !ok {
		return nil, fmt.Errorf("%w: _rebuild_tensor_v2 of %s, want a storage", ErrFormat, describe(args[0]))
	}
	offset, ok := args[1].(int)
	if !ok || offset < 0 {
		return nil, fmt.Errorf("%w: tensor storage offset %s", ErrFormat, describe(args[1]))
	}
	shape, err := ints(args[2], "size")
	if err != nil {
		return nil, err
	}
	stride, err := ints(args[3], "stride")
	if err != nil {
		return nil, err
	}
	if len(shape) != len(stride) {
		return nil, fmt.Errorf("%w: tensor of %d dimensions with %d strides", ErrFormat, len(shape), len(stride))
	}
	// The view must lie inside the storage, and hold no more elements than
	// it (a stride-0 broadcast could otherwise ask for any amount of memory).
	numel, last := int64(1), int64(offset)
	outside := fmt.Errorf("%w: tensor of shape %v, stride %v at offset %d lies outside storage %s (%d elements)", ErrFormat, shape, stride, offset, s.key, s.numel)
	for _, d := range shape {
		if d == 0 {
			numel = 0
			break
		}
		if numel > s.numel/d {
			return nil, fmt.Errorf("%w: tensor of shape %v is larger than its storage %s (%d elements)", ErrFormat, shape, s.key, s.numel)
		}
		numel *= d
	}
	if numel > 0 {
		if last >= s.numel {
			return nil, outside
		}
		for i, d := range shape {
			// last + (d-1)*stride must stay below numel; divide to not overflow
			if d > 1 && stride[i] > (s.numel-1-last)/(d-1) {
				return nil, outside
			}
			last += (d - 1) * stride[i]
		}
	}
	return &tensor{dtype: s.class.dtype, size: s.class.size, shape: shape, stride: stride, offset: int64(offset), storage: s}, nil
}

// rebuildParameter is torch._utils._rebuild_parameter(data, requires_grad,
// backward_hooks) and _rebuild_parameter_with_state(…, state): the
// parameter's tensor is all a state dict needs.
type rebuildParameter struct{}

var _ types.Callable = rebuildParameter{}

// Call returns the parameter's tensor.
func (rebuildParameter) Call(args ...any) (any, error) {
	if len(args) < 3 || len(args) > 4 {
		return nil, fmt.Errorf("%w: _rebuild_parameter with %d arguments", ErrFormat, len(args))
	}
	t, ok := args[0].(*tensor)
	if !ok {
		return nil, fmt.Errorf("%w: _rebuild_parameter of %s, want a tensor", ErrFormat, describe(args[0]))
	}
	return t, nil
}

// ints reads a tuple of non-negative ints (a tensor's size or stride).
func ints(v any, what string) ([]int64, error) {
	t, ok := v.(*types.Tuple)
	if !ok {
		return nil, fmt.Errorf("%w: tensor %s is %s, want a tuple", ErrFormat, what, describe(v))
	}
	if t.Len() > MaxDims {
		return nil, fmt.Errorf("%w: tensor %s has %d dimensions, over the %d limit", ErrFormat, what, t.Len(), MaxDims)
	}
	out := make([]int64, t.Len())
	for i := range out {
		n, ok := t.Get(i).(int)
		if !ok || n < 0 {
			return nil, fmt.Errorf("%w: tensor %s[%d] is %s", ErrFormat, what, i, describe(t.Get(i)))
		}
		out[i] = int64(n)
	}
	return out, nil
}

// legacyMagic is torch.serialization's MAGIC_NUMBER.
var legacyMagic, _ = new(big.Int).SetString("1950a86a20f9469cfc6c", 16)

// parseLegacy reads torch's pre-1.6 format: pickles of the magic number,
// the protocol version (1001) and system info, the state dict pickle, a
// pickle listing storage keys, then each storage as an int64 element count
// and its bytes, in that order.
func parseLegacy(r io.ReaderAt, size int64, name string) (*File, error) {
	if size > MaxLegacyBytes {
		return nil, fmt.Errorf("%w: %s is %d bytes, over the %d limit of a legacy-format file (read wholly into memory)", ErrFormat, name, size, int64(MaxLegacyBytes))
	}
	data := make([]byte, size)
	if _, err := r.ReadAt(data, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("%w: %s: %v", ErrFormat, name, err)
	}
	noStorage := func([]any) (*storage, error) { return nil, fmt.Errorf("persistent id in a header pickle") }
	pos := 0
	next := func(what string) (any, error) {
		if pos >= len(data) {
			return nil, fmt.Errorf("%w: %s ends before its %s", ErrFormat, name, what)
		}
		n, err := scanPickle(data[pos:], name+" ("+what+")")
		if err != nil {
			return nil, err
		}
		v, err := unpickle(data[pos:pos+n], name, noStorage)
		pos += n
		return v, err
	}
	magic, err := next("magic number")
	if err != nil {
		return nil, err
	}
	if m, ok := magic.(*big.Int); !ok || m.Cmp(legacyMagic) != 0 {
		return nil, fmt.Errorf("%w: %s: not a torch.save file (magic number %s)", ErrFormat, name, describe(magic))
	}
	if v, err := next("protocol version"); err != nil {
		return nil, err
	} else if v != 1001 {
		return nil, fmt.Errorf("%w: %s: legacy protocol version %s, want 1001", ErrFormat, name, describe(v))
	}
	info, err := next("system info")
	if err != nil {
		return nil, err
	}
	if d, ok := info.(*types.Dict); ok {
		if le, ok := d.Get("little_endian"); ok && le != true {
			return nil, fmt.Errorf("%w: %s was saved on a big-endian machine", ErrFormat, name)
		}
	}
	storages := map[string]*storage{}
	n, err := scanPickle(data[pos:], name)
	if err != nil {
		return nil, err
	}
	f, err := unpickleStateDict(data[pos:pos+n], name, func(pid []any) (*storage, error) {
		// ('storage', storage class, root key, location, numel, view metadata)
		if len(pid) != 6 {
			return nil, fmt.Errorf("persistent id has %d fields, want 6", len(pid))
		}
		if pid[5] != nil {
			return nil, fmt.Errorf("storage views (files from PyTorch < 1.0) are not supported")
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
		s := &storage{class: cls, key: key, numel: numel}
		storages[key] = s
		return s, nil
	})
	if err != nil {
		return nil, err
	}
	pos += n
	keys, err := next("storage keys")
	if err != nil {
		return nil, err
	}
	list, ok := keys.(*types.List)
	if !ok {
		return nil, fmt.Errorf("%w: %s: storage keys are %s, want a list", ErrFormat, name, describe(keys))
	}
	for _, k := range *list {
		key, _ := k.(string)
		s, ok := storages[key]
		if !ok || s.data != nil {
			return nil, fmt.Errorf("%w: %s: storage key %s is unknown or repeated", ErrFormat, name, describe(k))
		}
		if len(data)-pos < 8 {
			return nil, fmt.Errorf("%w: %s ends before storage %s", ErrFormat, name, key)
		}
		numel := int64(binary.LittleEndian.Uint64(data[pos:]))
		pos += 8
		nbytes := s.numel * int64(s.class.size)
		if numel != s.numel || nbytes > int64(len(data)-pos) {
			return nil, fmt.Errorf("%w: %s: storage %s holds %d elements with %d bytes left, the pickle declared %d", ErrFormat, name, key, numel, len(data)-pos, s.numel)
		}
		s.data = data[pos : pos+int(nbytes)]
		pos += int(nbytes)
	}
	return f, f.check()
}
