package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"math/bits"
	"os"
	"slices"
	"strconv"
	"unicode/utf8"
)

// TensorInfo describes one tensor of a file: its dtype, spelled as in the
// format ("F32", "BF16", …), and its shape, outermost dimension first (C
// order). A scalar has an empty shape and one element.
type TensorInfo struct {
	// DType is the element type: F64, F32, F16, BF16, I64, I32, I16, I8, U8
	// or BOOL.
	DType string
	// Shape lists the dimensions; every one is ≥ 0.
	Shape []int64
}

// NumElements returns the product of the dimensions (1 for a scalar).
func (ti TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range ti.Shape {
		n *= d
	}
	return n
}

// tensor is one validated header entry; begin and end index File.buf.
type tensor struct {
	dtype      string
	shape      []int64
	begin, end int
}

// File is a parsed safetensors file held in memory. Its methods may be
// called from several goroutines at once; it is never modified after Parse.
type File struct {
	name     string
	buf      []byte // the data buffer, after the header
	tensors  map[string]tensor
	names    []string // sorted
	metadata map[string]string
}

// Open reads the whole file at path into memory and parses it (a
// bert-base-uncased model.safetensors needs about 440 MB). Errors about the
// contents are *FormatError values naming path.
func Open(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	return Parse(data, path)
}

// Parse parses a whole safetensors file held in data, checking the header
// completely: the length prefix, UTF-8 JSON with no duplicate keys, every
// dtype, that each tensor's byte length matches its shape, and that the
// data_offsets tile the data buffer exactly, without gaps or overlaps. name
// is used in error messages only. The File keeps data and aliases it: the
// caller must not modify data afterwards.
func Parse(data []byte, name string) (*File, error) {
	hdrErr := func(tensor, format string, args ...any) error {
		return &FormatError{File: name, Tensor: tensor, Err: ErrHeader, Detail: fmt.Sprintf(format, args...)}
	}
	if len(data) < 8 {
		return nil, hdrErr("", "file is %d bytes, shorter than the 8-byte header length", len(data))
	}
	n := binary.LittleEndian.Uint64(data)
	if n > maxHeaderSize {
		return nil, hdrErr("", "header length %d exceeds the limit of %d bytes", n, maxHeaderSize)
	}
	if n > uint64(len(data)-8) {
		return nil, hdrErr("", "header length %d goes beyond the end of the %d-byte file", n, len(data))
	}
	header := data[8 : 8+n]
	if !utf8.Valid(header) {
		return nil, hdrErr("", "header is not valid UTF-8")
	}
	f := &File{name: name, buf: data[8+n:]}
	entries, order, meta, err := parseHeader(header, name)
	if err != nil {
		return nil, err
	}
	f.metadata = meta
	f.tensors = make(map[string]tensor, len(entries))
	for _, tn := range order {
		t, err := checkEntry(entries[tn], tn, len(f.buf), name)
		if err != nil {
			return nil, err
		}
		f.tensors[tn] = t
	}
	if err := checkLayout(f.tensors, len(f.buf), name); err != nil {
		return nil, err
	}
	f.names = slices.Sorted(maps.Keys(f.tensors))
	return f, nil
}

// rawEntry is a header entry as decoded, before its values are checked.
type rawEntry struct {
	dtype   string
	shape   []uint64
	offsets []uint64
}

// parseHeader decodes the header JSON token by token, so that it can reject
// duplicate keys, unknown fields, trailing data and non-integer numbers,
// which encoding/json's Unmarshal would silently accept. order lists tensor
// names as they appear in the header.
func parseHeader(header []byte, file string) (entries map[string]rawEntry, order []string, meta map[string]string, err error) {
	d := &hdrDecoder{dec: json.NewDecoder(bytes.NewReader(header)), file: file}
	d.dec.UseNumber()
	if err := d.delim('{', ""); err != nil {
		return nil, nil, nil, err
	}
	entries = map[string]rawEntry{}
	seenMeta := false
	for d.dec.More() {
		key, err := d.str("")
		if err != nil {
			return nil, nil, nil, err
		}
		if key == metadataKey {
			if seenMeta {
				return nil, nil, nil, d.fail(ErrDuplicate, key, "key appears twice in the header")
			}
			seenMeta = true
			if meta, err = d.metadata(); err != nil {
				return nil, nil, nil, err
			}
			continue
		}
		if _, dup := entries[key]; dup {
			return nil, nil, nil, d.fail(ErrDuplicate, key, "tensor appears twice in the header")
		}
		e, err := d.entry(key)
		if err != nil {
			return nil, nil, nil, err
		}
		entries[key] = e
		order = append(order, key)
	}
	if err := d.delim('}', ""); err != nil {
		return nil, nil, nil, err
	}
	if tok, err := d.dec.Token(); err != io.EOF {
		if err != nil {
			return nil, nil, nil, d.fail(ErrHeader, "", "invalid JSON after the header object: %v", err)
		}
		return nil, nil, nil, d.fail(ErrHeader, "", "unexpected %v after the header object", tok)
	}
	return entries, order, meta, nil
}

// hdrDecoder wraps a json.Decoder with helpers that turn every problem into
// a *FormatError.
type hdrDecoder struct {
	dec  *json.Decoder
	file string
}

func (d *hdrDecoder) fail(kind error, tensor, format string, args ...any) error {
	return &FormatError{File: d.file, Tensor: tensor, Err: kind, Detail: fmt.Sprintf(format, args...)}
}

// token reads the next token; io.EOF inside the header is a truncation.
func (d *hdrDecoder) token(tensor string) (json.Token, error) {
	tok, err := d.dec.Token()
	if err == io.EOF {
		return nil, d.fail(ErrHeader, tensor, "header JSON ends early")
	}
	if err != nil {
		return nil, d.fail(ErrHeader, tensor, "invalid JSON: %v", err)
	}
	return tok, nil
}

func (d *hdrDecoder) delim(want json.Delim, tensor string) error {
	tok, err := d.token(tensor)
	if err != nil {
		return err
	}
	if got, ok := tok.(json.Delim); !ok || got != want {
		return d.fail(ErrHeader, tensor, "expected %q, found %s", want, describe(tok))
	}
	return nil
}

func (d *hdrDecoder) str(tensor string) (string, error) {
	tok, err := d.token(tensor)
	if err != nil {
		return "", err
	}
	s, ok := tok.(string)
	if !ok {
		return "", d.fail(ErrHeader, tensor, "expected a string, found %s", describe(tok))
	}
	return s, nil
}

// metadata decodes the value of __metadata__: an object of strings, or null.
func (d *hdrDecoder) metadata() (map[string]string, error) {
	tok, err := d.token(metadataKey)
	if err != nil {
		return nil, err
	}
	if tok == nil {
		return nil, nil
	}
	if tok != json.Delim('{') {
		return nil, d.fail(ErrHeader, metadataKey, "expected an object of strings, found %s", describe(tok))
	}
	meta := map[string]string{}
	for d.dec.More() {
		k, err := d.str(metadataKey)
		if err != nil {
			return nil, err
		}
		if _, dup := meta[k]; dup {
			return nil, d.fail(ErrDuplicate, metadataKey, "key %q appears twice", k)
		}
		v, err := d.token(metadataKey)
		if err != nil {
			return nil, err
		}
		s, ok := v.(string)
		if !ok {
			return nil, d.fail(ErrHeader, metadataKey, "value of %q must be a string, found %s", k, describe(v))
		}
		meta[k] = s
	}
	return meta, d.delim('}', metadataKey)
}

// entry decodes {"dtype": S, "shape": [U...], "data_offsets": [U, U]},
// fields in any order, each exactly once, and nothing else.
func (d *hdrDecoder) entry(name string) (rawEntry, error) {
	var e rawEntry
	if err := d.delim('{', name); err != nil {
		return e, err
	}
	seen := map[string]bool{}
	for d.dec.More() {
		field, err := d.str(name)
		if err != nil {
			return e, err
		}
		if seen[field] {
			return e, d.fail(ErrHeader, name, "field %q appears twice", field)
		}
		seen[field] = true
		switch field {
		case "dtype":
			e.dtype, err = d.str(name)
		case "shape":
			e.shape, err = d.uints(name, field)
		case "data_offsets":
			e.offsets, err = d.uints(name, field)
		default:
			err = d.fail(ErrHeader, name, "unknown field %q", field)
		}
		if err != nil {
			return e, err
		}
	}
	for _, f := range []string{"dtype", "shape", "data_offsets"} {
		if !seen[f] {
			return e, d.fail(ErrHeader, name, "missing field %q", f)
		}
	}
	if len(e.offsets) != 2 {
		return e, d.fail(ErrHeader, name, "data_offsets has %d numbers, want 2", len(e.offsets))
	}
	return e, d.delim('}', name)
}

// uints decodes an array of non-negative integers that fit in an int64.
func (d *hdrDecoder) uints(name, field string) ([]uint64, error) {
	if err := d.delim('[', name); err != nil {
		return nil, err
	}
	out := []uint64{}
	for d.dec.More() {
		tok, err := d.token(name)
		if err != nil {
			return nil, err
		}
		num, ok := tok.(json.Number)
		if !ok {
			return nil, d.fail(ErrHeader, name, "%s must hold integers, found %s", field, describe(tok))
		}
		v, err := strconv.ParseUint(string(num), 10, 64)
		if err != nil || v > math.MaxInt64 {
			return nil, d.fail(ErrHeader, name, "%s holds %s, not an integer in [0, 2⁶³)", field, num)
		}
		out = append(out, v)
	}
	return out, d.delim(']', name)
}

// describe names a JSON token for an error message.
func describe(tok json.Token) string {
	switch v := tok.(type) {
	case nil:
		return "null"
	case json.Delim:
		return strconv.Quote(v.String())
	case string:
		return "string " + strconv.Quote(v)
	case json.Number:
		return "number " + string(v)
	case bool:
		return "boolean " + strconv.FormatBool(v)
	}
	return fmt.Sprintf("%v", tok)
}

// checkEntry checks one entry's dtype, shape and offsets against each other
// and against the buffer length.
func checkEntry(e rawEntry, name string, bufLen int, file string) (tensor, error) {
	fail := func(kind error, format string, args ...any) (tensor, error) {
		return tensor{}, &FormatError{File: file, Tensor: name, Err: kind, Detail: fmt.Sprintf(format, args...)}
	}
	size, ok := dtypeSize[e.dtype]
	if !ok {
		return fail(ErrDType, "dtype %q", e.dtype)
	}
	shape := make([]int64, len(e.shape))
	for i, dim := range e.shape {
		shape[i] = int64(dim) // uints capped the values at MaxInt64
	}
	nbytes, ok := byteLen(shape, size)
	if !ok {
		return fail(ErrShape, "shape %v of %s overflows", shape, e.dtype)
	}
	begin, end := e.offsets[0], e.offsets[1]
	if begin > end {
		return fail(ErrHeader, "data_offsets [%d, %d] end before they begin", begin, end)
	}
	if end > uint64(bufLen) {
		return fail(ErrHeader, "data_offsets [%d, %d] go beyond the %d-byte data buffer", begin, end, bufLen)
	}
	if end-begin != nbytes {
		return fail(ErrShape, "shape %v of %s needs %d bytes, data_offsets [%d, %d] hold %d", shape, e.dtype, nbytes, begin, end, end-begin)
	}
	return tensor{dtype: e.dtype, shape: shape, begin: int(begin), end: int(end)}, nil
}

// byteLen returns the byte length of a tensor of the given shape and element
// size, and false when a dimension is negative or the product overflows.
func byteLen(shape []int64, size int) (uint64, bool) {
	n := uint64(size)
	for _, dim := range shape {
		if dim < 0 {
			return 0, false
		}
		hi, lo := bits.Mul64(n, uint64(dim))
		if hi != 0 || lo > math.MaxInt64 {
			return 0, false
		}
		n = lo
	}
	return n, true
}

// checkLayout checks that the tensors' byte ranges, sorted by offset, tile
// [0, bufLen) exactly: no gap, no overlap, no trailing bytes.
func checkLayout(tensors map[string]tensor, bufLen int, file string) error {
	names := slices.Collect(maps.Keys(tensors))
	slices.SortFunc(names, func(a, b string) int {
		ta, tb := tensors[a], tensors[b]
		if ta.begin != tb.begin {
			return ta.begin - tb.begin
		}
		if ta.end != tb.end {
			return ta.end - tb.end
		}
		if a < b {
			return -1
		}
		return 1
	})
	next := 0
	for _, n := range names {
		t := tensors[n]
		switch {
		case t.begin < next:
			return &FormatError{File: file, Tensor: n, Err: ErrHeader,
				Detail: fmt.Sprintf("data_offsets [%d, %d] overlap the previous tensor, which ends at %d", t.begin, t.end, next)}
		case t.begin > next:
			return &FormatError{File: file, Tensor: n, Err: ErrHeader,
				Detail: fmt.Sprintf("data_offsets [%d, %d] leave a gap after the previous tensor, which ends at %d", t.begin, t.end, next)}
		}
		next = t.end
	}
	if next != bufLen {
		return &FormatError{File: file, Err: ErrHeader,
			Detail: fmt.Sprintf("tensors cover %d bytes of the %d-byte data buffer", next, bufLen)}
	}
	return nil
}

// Names returns the names of all tensors, sorted. The slice is a copy.
func (f *File) Names() []string { return slices.Clone(f.names) }

// Metadata returns a copy of the header's __metadata__ map; it is empty
// when the file has none.
func (f *File) Metadata() map[string]string {
	m := make(map[string]string, len(f.metadata))
	maps.Copy(m, f.metadata)
	return m
}

func (f *File) lookup(name string) (tensor, error) {
	t, ok := f.tensors[name]
	if !ok {
		return tensor{}, &FormatError{File: f.name, Tensor: name, Err: ErrNotFound}
	}
	return t, nil
}

// Info returns the dtype and shape of the named tensor, or an error
// wrapping ErrNotFound.
func (f *File) Info(name string) (TensorInfo, error) {
	t, err := f.lookup(name)
	if err != nil {
		return TensorInfo{}, err
	}
	return TensorInfo{DType: t.dtype, Shape: slices.Clone(t.shape)}, nil
}

// Raw returns the named tensor's bytes (little-endian, C order) and its
// info. The bytes alias the File's buffer: the caller must not modify them.
func (f *File) Raw(name string) ([]byte, TensorInfo, error) {
	t, err := f.lookup(name)
	if err != nil {
		return nil, TensorInfo{}, err
	}
	return f.buf[t.begin:t.end:t.end], TensorInfo{DType: t.dtype, Shape: slices.Clone(t.shape)}, nil
}

// Float32 returns the named tensor converted to a new []float32, with its
// shape. F32, F16 and BF16 convert exactly (F16 subnormals, infinities and
// NaNs included); F64 rounds to the nearest float32 as Go's conversion does.
// Other dtypes give an error wrapping ErrDType.
func (f *File) Float32(name string) ([]float32, []int64, error) {
	t, err := f.lookup(name)
	if err != nil {
		return nil, nil, err
	}
	b := f.buf[t.begin:t.end]
	var out []float32
	switch t.dtype {
	case "F32":
		out = make([]float32, len(b)/4)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case "F16":
		out = make([]float32, len(b)/2)
		for i := range out {
			out[i] = f16ToFloat32(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case "BF16":
		out = make([]float32, len(b)/2)
		for i := range out {
			out[i] = bf16ToFloat32(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case "F64":
		out = make([]float32, len(b)/8)
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:])))
		}
	default:
		return nil, nil, &FormatError{File: f.name, Tensor: name, Err: ErrDType,
			Detail: fmt.Sprintf("cannot convert %s to float32", t.dtype)}
	}
	return out, slices.Clone(t.shape), nil
}
