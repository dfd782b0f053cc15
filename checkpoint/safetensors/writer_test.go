package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestWriterGolden(t *testing.T) {
	var w Writer
	if err := w.AddBF16FromFloat32("b", []int64{}, []float32{-2.5}); err != nil {
		t.Fatal(err)
	}
	if err := w.AddFloat32("a", []int64{2}, []float32{1, -2.5}); err != nil {
		t.Fatal(err)
	}
	w.SetMetadata("format", "pt")
	got, err := w.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, golden) {
		t.Errorf("Bytes() =\n%q\nwant\n%q", got, golden)
	}
}

// rawTensor is one tensor of the round-trip set.
type rawTensor struct {
	name, dtype string
	shape       []int64
	data        []byte
}

func roundTripSet() []rawTensor {
	le := func(vals ...uint64) func(size int) []byte {
		return func(size int) []byte {
			var b []byte
			for _, v := range vals {
				b = binary.LittleEndian.AppendUint64(b, v)[:len(b)+size]
			}
			return b
		}
	}
	return []rawTensor{
		{"f64", "F64", []int64{2}, le(math.Float64bits(1.5), math.Float64bits(-1e300))(8)},
		{"f32", "F32", []int64{2, 3}, le(0x3f800000, 0xc0200000, 0x7f800000, 0x7fc00000, 0x00000001, 0x80000000)(4)},
		{"f32.scalar", "F32", []int64{}, le(0x40490fdb)(4)},
		{"f32.empty", "F32", []int64{0}, nil},
		{"f16", "F16", []int64{3}, le(0x3c00, 0xc100, 0x0001)(2)},
		{"bf16", "BF16", []int64{2, 2}, le(0x3f80, 0xc020, 0x7f80, 0x0001)(2)},
		{"i64", "I64", []int64{1}, le(1 << 63)(8)},
		{"i32", "I32", []int64{}, le(0xfffffffe)(4)},
		{"i16", "I16", []int64{2}, le(0x8000, 0x7fff)(2)},
		{"i8", "I8", []int64{0}, nil},
		{"u8", "U8", []int64{5}, []byte{0, 1, 2, 254, 255}},
		{"bool", "BOOL", []int64{2, 0, 3}, nil},
		{"bool.3", "BOOL", []int64{3}, []byte{1, 0, 1}},
		{"名前/ü <&>\"\\", "U8", []int64{1, 1, 1}, []byte{42}},
	}
}

func TestRoundTrip(t *testing.T) {
	set := roundTripSet()
	var w Writer
	for _, c := range set {
		if err := w.AddRaw(c.name, c.dtype, c.shape, c.data); err != nil {
			t.Fatal(err)
		}
	}
	w.SetMetadata("format", "pt")
	w.SetMetadata("", "empty key")
	b, err := w.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if hdr := binary.LittleEndian.Uint64(b); hdr%8 != 0 {
		t.Errorf("header length %d is not a multiple of 8", hdr)
	}
	f, err := Parse(b, "roundtrip")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range set {
		names = append(names, c.name)
		raw, info, err := f.Raw(c.name)
		if err != nil {
			t.Fatal(err)
		}
		if info.DType != c.dtype || !slices.Equal(info.Shape, c.shape) || info.Shape == nil || !bytes.Equal(raw, c.data) {
			t.Errorf("%s: got %s %v %x, want %s %v %x", c.name, info.DType, info.Shape, raw, c.dtype, c.shape, c.data)
		}
	}
	slices.Sort(names)
	if got := f.Names(); !slices.Equal(got, names) {
		t.Errorf("Names() = %q, want %q", got, names)
	}
	if m := f.Metadata(); len(m) != 2 || m["format"] != "pt" || m[""] != "empty key" {
		t.Errorf("Metadata() = %v", m)
	}

	// The float dtypes convert to the expected float32 values.
	for name, want := range map[string][]float32{
		"f64":        {1.5, float32(math.Inf(-1))},
		"f32.scalar": {math.Pi},
		"f32.empty":  {},
		"f16":        {1, -2.5, float32(math.Ldexp(1, -24))},
		"bf16":       {1, -2.5, float32(math.Inf(1)), float32(math.Ldexp(1, -133))},
	} {
		got, _, err := f.Float32(name)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("Float32(%s) = %v, %v, want %v", name, got, err, want)
		}
	}
	got, _, err := f.Float32("f32")
	if err != nil || got[0] != 1 || got[1] != -2.5 || !math.IsInf(float64(got[2]), 1) || got[3] == got[3] ||
		math.Float32bits(got[4]) != 1 || math.Float32bits(got[5]) != 0x80000000 {
		t.Errorf("Float32(f32) = %v, %v", got, err)
	}
}

func TestAddFloat32RoundTrip(t *testing.T) {
	var w Writer
	vals := []float32{0, 1, -2.5, 65504, 1e-45, float32(math.Inf(-1))}
	if err := w.AddFloat32("w", []int64{3, 2}, vals); err != nil {
		t.Fatal(err)
	}
	if err := w.AddBF16FromFloat32("h", []int64{6}, vals); err != nil {
		t.Fatal(err)
	}
	b, err := w.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(b, "rt")
	if err != nil {
		t.Fatal(err)
	}
	got, shape, err := f.Float32("w")
	if err != nil || !slices.Equal(got, vals) || !slices.Equal(shape, []int64{3, 2}) {
		t.Errorf("Float32(w) = %v %v %v", got, shape, err)
	}
	got, _, err = f.Float32("h")
	want := []float32{0, 1, -2.5, 65536, 0, float32(math.Inf(-1))}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("Float32(h) = %v %v, want %v", got, err, want)
	}
}

// TestWriterDeterministic adds the same tensors and metadata in many orders
// and checks that the bytes never change, through Bytes and WriteFile.
func TestWriterDeterministic(t *testing.T) {
	set := roundTripSet()
	meta := [][2]string{{"format", "pt"}, {"b", "2"}, {"a", "1"}, {"z", "26"}}
	var want []byte
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20 {
		order := rng.Perm(len(set))
		if i == 1 {
			slices.Reverse(order)
		}
		var w Writer
		for _, j := range order {
			c := set[j]
			if err := w.AddRaw(c.name, c.dtype, c.shape, c.data); err != nil {
				t.Fatal(err)
			}
		}
		for _, j := range rng.Perm(len(meta)) {
			w.SetMetadata(meta[j][0], meta[j][1])
		}
		got, err := w.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if want == nil {
			want = got
			continue
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("order %v gave different bytes:\n%q\nwant\n%q", order, got, want)
		}
		if i == 2 {
			path := filepath.Join(t.TempDir(), "adapter_model.safetensors")
			if err := w.WriteFile(path); err != nil {
				t.Fatal(err)
			}
			onDisk, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(onDisk, want) {
				t.Fatalf("WriteFile wrote different bytes (%v)", err)
			}
		}
	}
	// The header lists __metadata__ first, with sorted keys, then tensors by name.
	hdr := string(want[8 : 8+binary.LittleEndian.Uint64(want)])
	if !strings.HasPrefix(hdr, `{"__metadata__":{"a":"1","b":"2","format":"pt","z":"26"},"bf16":{`) {
		t.Errorf("header starts %q", hdr[:80])
	}
	prev := -1
	for _, n := range []string{`"bf16"`, `"bool"`, `"bool.3"`, `"f16"`, `"f32"`, `"f32.empty"`, `"u8"`, `"名前/ü <&>\"\\"`} {
		i := strings.Index(hdr, n+":")
		if i <= prev {
			t.Errorf("%s is out of name order in the header", n)
		}
		prev = i
	}
}

// TestWriterLayoutAligned checks that the data buffer holds larger elements
// first, so each tensor starts at a multiple of its element size.
func TestWriterLayoutAligned(t *testing.T) {
	var w Writer
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.AddRaw("a.mask", "U8", []int64{3}, []byte{1, 2, 3}))
	must(w.AddRaw("b.half", "F16", []int64{1}, []byte{0, 0x3c}))
	must(w.AddFloat32("c.weight", []int64{1}, []float32{1}))
	must(w.AddRaw("d.step", "I64", []int64{}, make([]byte, 8)))
	b, err := w.Bytes()
	must(err)
	hdrEnd := 8 + int(binary.LittleEndian.Uint64(b))
	var hdr map[string]struct {
		DType       string `json:"dtype"`
		DataOffsets [2]int `json:"data_offsets"`
	}
	must(json.Unmarshal(b[8:hdrEnd], &hdr))
	wantStart := map[string]int{"d.step": 0, "c.weight": 8, "b.half": 12, "a.mask": 14}
	for name, start := range wantStart {
		e := hdr[name]
		if e.DataOffsets[0] != start {
			t.Errorf("%s starts at %d, want %d", name, e.DataOffsets[0], start)
		}
		if (hdrEnd+e.DataOffsets[0])%dtypeSize[e.DType] != 0 {
			t.Errorf("%s is not aligned in the file", name)
		}
	}
	if _, err := Parse(b, "aligned"); err != nil {
		t.Fatal(err)
	}
}

func TestWriterErrors(t *testing.T) {
	var w Writer
	if err := w.AddFloat32("x", []int64{2}, []float32{1, 2}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		err    error
		kind   error
		detail string
	}{
		{"duplicate", w.AddFloat32("x", []int64{2}, []float32{1, 2}), ErrDuplicate, "already added"},
		{"duplicate across dtypes", w.AddRaw("x", "U8", []int64{1}, []byte{1}), ErrDuplicate, "already added"},
		{"unknown dtype", w.AddRaw("y", "F8", []int64{1}, []byte{1}), ErrDType, `dtype "F8"`},
		{"short data", w.AddFloat32("y", []int64{2, 2}, []float32{1, 2, 3}), ErrShape, "shape [2 2] of F32 needs 16 bytes, data has 12"},
		{"scalar without data", w.AddFloat32("y", []int64{}, nil), ErrShape, "needs 4 bytes, data has 0"},
		{"raw length", w.AddRaw("y", "I64", []int64{1}, make([]byte, 4)), ErrShape, "needs 8 bytes"},
		{"bf16 length", w.AddBF16FromFloat32("y", []int64{1}, []float32{1, 2}), ErrShape, "needs 2 bytes, data has 4"},
		{"negative dimension", w.AddRaw("y", "U8", []int64{-1, -1}, []byte{1}), ErrShape, "negative dimension"},
		{"overflow", w.AddRaw("y", "F32", []int64{1 << 32, 1 << 31}, nil), ErrShape, "overflows"},
		{"reserved name", w.AddRaw("__metadata__", "U8", []int64{1}, []byte{1}), ErrHeader, "reserved"},
		{"bad UTF-8 name", w.AddRaw("\xff", "U8", []int64{1}, []byte{1}), ErrHeader, "not valid UTF-8"},
	} {
		if !errors.Is(c.err, c.kind) {
			t.Errorf("%s: error %v is not %v", c.name, c.err, c.kind)
			continue
		}
		if fe, ok := asFormatError(c.err); !ok || fe.Tensor == "" || !strings.Contains(fe.Detail, c.detail) {
			t.Errorf("%s: error %v does not name the tensor or say %q", c.name, c.err, c.detail)
		}
	}
	// Failed adds change nothing.
	b, err := w.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if f, err := Parse(b, "w"); err != nil || !slices.Equal(f.Names(), []string{"x"}) {
		t.Errorf("after failed adds: %v, %v", f, err)
	}

	w.SetMetadata("k", "\xfe")
	if _, err := w.Bytes(); !errors.Is(err, ErrHeader) || !strings.Contains(err.Error(), `tensor "__metadata__"`) {
		t.Errorf("Bytes with bad metadata: %v", err)
	}
	path := filepath.Join(t.TempDir(), "m.safetensors")
	err = w.WriteFile(path)
	if fe, ok := asFormatError(err); !ok || fe.File != path || !errors.Is(err, ErrHeader) {
		t.Errorf("WriteFile with bad metadata: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("WriteFile left %s after failing: %v", path, err)
	}
}

func TestWriterCopiesInput(t *testing.T) {
	var w Writer
	shape := []int64{2}
	raw := []byte{1, 2}
	vals := []float32{1, 2}
	if err := w.AddRaw("r", "U8", shape, raw); err != nil {
		t.Fatal(err)
	}
	if err := w.AddFloat32("f", shape, vals); err != nil {
		t.Fatal(err)
	}
	before, _ := w.Bytes()
	shape[0], raw[0], vals[0] = 9, 9, 9
	after, _ := w.Bytes()
	if !bytes.Equal(before, after) {
		t.Error("changing the caller's slices changed the Writer's output")
	}
}

func TestEmptyWriter(t *testing.T) {
	var w Writer
	b, err := w.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if want := "\x08\x00\x00\x00\x00\x00\x00\x00{}      "; string(b) != want {
		t.Errorf("Bytes() = %q, want %q", b, want)
	}
	f, err := Parse(b, "empty")
	if err != nil || len(f.Names()) != 0 || len(f.Metadata()) != 0 {
		t.Errorf("Parse(empty) = %v, %v", f, err)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "adapter_model.safetensors")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	var w Writer
	if err := w.AddFloat32("a", []int64{2}, []float32{1, -2.5}); err != nil {
		t.Fatal(err)
	}
	if err := w.AddBF16FromFloat32("b", nil, []float32{-2.5}); err != nil {
		t.Fatal(err)
	}
	w.SetMetadata("format", "pt")
	if err := w.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, golden) {
		t.Fatalf("replaced file holds %q, %v", got, err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v, %v, want 0644", st.Mode(), err)
	}
	assertOnly(t, dir, "adapter_model.safetensors")

	// A failed rename (the target is a non-empty directory) leaves the
	// directory as it was and no temporary file behind.
	target := filepath.Join(dir, "occupied")
	if err := os.MkdirAll(filepath.Join(target, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFile(target); err == nil || !strings.Contains(err.Error(), "safetensors: writing "+target) {
		t.Errorf("WriteFile onto a directory: %v", err)
	}
	assertOnly(t, dir, "adapter_model.safetensors", "occupied")

	// A missing directory fails before creating anything.
	if err := w.WriteFile(filepath.Join(dir, "no", "such.safetensors")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("WriteFile into a missing directory: %v", err)
	}

	// A relative path writes in the current directory.
	t.Chdir(dir)
	if err := w.WriteFile("rel.safetensors"); err != nil {
		t.Fatal(err)
	}
	assertOnly(t, dir, "adapter_model.safetensors", "occupied", "rel.safetensors")
}

func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, names) {
		t.Errorf("directory holds %q, want %q", got, names)
	}
}
