package safetensors

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/loraft/loraft/internal/atomicfile"
)

// Writer collects tensors and metadata and writes them as one safetensors
// file. The zero value is ready to use. A Writer copies what it is given, so
// callers may reuse their slices after each Add; it is not safe for
// concurrent use.
//
// Output is deterministic: the same tensors and metadata give the same
// bytes whatever the order of the Add and SetMetadata calls. The header
// lists __metadata__ first (left out when empty), then the tensors sorted
// by name, in compact JSON (no HTML escaping), padded with spaces to a
// multiple of 8 bytes. The data buffer lays tensors out by element size,
// largest first, then by name (the Python writer's order), so that with the
// 8-byte header every tensor starts at a multiple of its element size and
// zero-copy loaders (torch's view, mmap readers) see aligned data; with one
// dtype, as in a PEFT adapter, that is plain name order.
type Writer struct {
	tensors  map[string]wtensor
	metadata map[string]string
}

type wtensor struct {
	dtype string
	shape []int64
	data  []byte
}

// AddRaw adds a tensor from its raw little-endian, C-order bytes. It
// returns an error wrapping ErrDType for an unknown dtype, ErrShape when a
// dimension is negative or len(data) is not the shape's byte length,
// ErrHeader for a name that is not UTF-8 or is "__metadata__", and
// ErrDuplicate for a name already added.
func (w *Writer) AddRaw(name, dtype string, shape []int64, data []byte) error {
	if err := w.check(name, dtype, shape, len(data)); err != nil {
		return err
	}
	w.add(name, dtype, shape, bytes.Clone(data))
	return nil
}

// AddFloat32 adds data as an F32 tensor of the given shape. len(data) must
// be the product of the dimensions (1 for the scalar shape []).
func (w *Writer) AddFloat32(name string, shape []int64, data []float32) error {
	if err := w.check(name, "F32", shape, 4*len(data)); err != nil {
		return err
	}
	b := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	w.add(name, "F32", shape, b)
	return nil
}

// AddBF16FromFloat32 adds data as a BF16 tensor, rounding each value to the
// nearest bfloat16 with ties to even, as PyTorch does: values beyond the
// bfloat16 range become infinities and NaNs become 0x7FC0.
func (w *Writer) AddBF16FromFloat32(name string, shape []int64, data []float32) error {
	if err := w.check(name, "BF16", shape, 2*len(data)); err != nil {
		return err
	}
	b := make([]byte, 2*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint16(b[2*i:], float32ToBF16(v))
	}
	w.add(name, "BF16", shape, b)
	return nil
}

// SetMetadata sets key to value in the header's __metadata__ map, replacing
// an earlier value. HF loaders expect "format": "pt" in PEFT adapters and
// model files. Keys and values must be valid UTF-8; Bytes and WriteFile
// report those that are not.
func (w *Writer) SetMetadata(key, value string) {
	if w.metadata == nil {
		w.metadata = map[string]string{}
	}
	w.metadata[key] = value
}

func (w *Writer) check(name, dtype string, shape []int64, nbytes int) error {
	fail := func(kind error, format string, args ...any) error {
		return &FormatError{Tensor: name, Err: kind, Detail: fmt.Sprintf(format, args...)}
	}
	if !utf8.ValidString(name) {
		return fail(ErrHeader, "name is not valid UTF-8")
	}
	if name == metadataKey {
		return fail(ErrHeader, "name is reserved for the metadata map")
	}
	if _, dup := w.tensors[name]; dup {
		return fail(ErrDuplicate, "tensor already added")
	}
	size, ok := dtypeSize[dtype]
	if !ok {
		return fail(ErrDType, "dtype %q", dtype)
	}
	want, ok := byteLen(shape, size)
	if !ok {
		return fail(ErrShape, "shape %v has a negative dimension or overflows", shape)
	}
	if uint64(nbytes) != want {
		return fail(ErrShape, "shape %v of %s needs %d bytes, data has %d", shape, dtype, want, nbytes)
	}
	return nil
}

func (w *Writer) add(name, dtype string, shape []int64, data []byte) {
	if w.tensors == nil {
		w.tensors = map[string]wtensor{}
	}
	w.tensors[name] = wtensor{dtype: dtype, shape: slices.Clone(shape), data: data}
}

// layout returns the tensor names in data-buffer order and the padded
// header, or an error for metadata that is not valid UTF-8.
func (w *Writer) layout(file string) (order []string, header []byte, err error) {
	for k, v := range w.metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return nil, nil, &FormatError{File: file, Tensor: metadataKey, Err: ErrHeader,
				Detail: fmt.Sprintf("key %q or its value is not valid UTF-8", k)}
		}
	}
	order = slices.Collect(maps.Keys(w.tensors))
	slices.SortFunc(order, func(a, b string) int {
		sa, sb := dtypeSize[w.tensors[a].dtype], dtypeSize[w.tensors[b].dtype]
		if sa != sb {
			return sb - sa
		}
		return cmp.Compare(a, b)
	})
	offsets := make(map[string][2]int, len(order))
	pos := 0
	for _, n := range order {
		end := pos + len(w.tensors[n].data)
		offsets[n] = [2]int{pos, end}
		pos = end
	}

	h := []byte{'{'}
	if len(w.metadata) > 0 {
		h = appendString(h, metadataKey)
		h = append(h, ':', '{')
		for i, k := range slices.Sorted(maps.Keys(w.metadata)) {
			if i > 0 {
				h = append(h, ',')
			}
			h = appendString(h, k)
			h = append(h, ':')
			h = appendString(h, w.metadata[k])
		}
		h = append(h, '}')
	}
	for _, n := range slices.Sorted(maps.Keys(w.tensors)) {
		if len(h) > 1 {
			h = append(h, ',')
		}
		t := w.tensors[n]
		h = appendString(h, n)
		h = append(h, `:{"dtype":`...)
		h = appendString(h, t.dtype)
		h = append(h, `,"shape":[`...)
		for i, d := range t.shape {
			if i > 0 {
				h = append(h, ',')
			}
			h = strconv.AppendInt(h, d, 10)
		}
		h = append(h, `],"data_offsets":[`...)
		h = strconv.AppendInt(h, int64(offsets[n][0]), 10)
		h = append(h, ',')
		h = strconv.AppendInt(h, int64(offsets[n][1]), 10)
		h = append(h, "]}"...)
	}
	h = append(h, '}')
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	return order, h, nil
}

// appendString appends s as a JSON string, escaping only what JSON requires
// (s is valid UTF-8, checked by the callers).
func appendString(dst []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // cannot fail for a string
	return append(dst, bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})...)
}

// writeTo writes the whole file to out.
func (w *Writer) writeTo(out io.Writer, order []string, header []byte) error {
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(header)))
	if _, err := out.Write(n[:]); err != nil {
		return err
	}
	if _, err := out.Write(header); err != nil {
		return err
	}
	for _, name := range order {
		if _, err := out.Write(w.tensors[name].data); err != nil {
			return err
		}
	}
	return nil
}

// Bytes returns the complete file. The Writer is unchanged and may be
// added to and written again.
func (w *Writer) Bytes() ([]byte, error) {
	order, header, err := w.layout("")
	if err != nil {
		return nil, err
	}
	size := 8 + len(header)
	for _, t := range w.tensors {
		size += len(t.data)
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	if err := w.writeTo(buf, order, header); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteFile writes the file to path atomically: it writes a temporary file
// in the same directory, fsyncs it, renames it over path and fsyncs the
// directory, so a crash leaves either the old file or the complete new one
// under path, never a partial one. The file gets mode 0644.
func (w *Writer) WriteFile(path string) error {
	order, header, err := w.layout(path)
	if err != nil {
		return err
	}
	err = atomicfile.Write(path, 0o644, func(f io.Writer) error {
		bw := bufio.NewWriterSize(f, 1<<20)
		if err := w.writeTo(bw, order, header); err != nil {
			return err
		}
		return bw.Flush()
	})
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	return nil
}
