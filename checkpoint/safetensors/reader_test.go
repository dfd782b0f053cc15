package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// golden is a complete file, checked by hand byte by byte: metadata
// {"format": "pt"}, "a" F32 [2] = {1, -2.5}, and "b" a BF16 scalar -2.5.
// The JSON is 139 bytes, padded with 5 spaces to 144 = 0x90.
var golden = []byte("" +
	"\x90\x00\x00\x00\x00\x00\x00\x00" +
	`{"__metadata__":{"format":"pt"},` + // 32 bytes
	`"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},` + // 53
	`"b":{"dtype":"BF16","shape":[],"data_offsets":[8,10]}}` + // 54
	"     " + // 139 + 5 = 144
	"\x00\x00\x80\x3f" + // 1.0   = 0x3f800000
	"\x00\x00\x20\xc0" + // -2.5  = 0xc0200000
	"\x20\xc0") // -2.5 as bfloat16 = 0xc020

// file builds a file from a header and a data buffer, without padding.
func file(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func asFormatError(err error) (*FormatError, bool) {
	var fe *FormatError
	ok := errors.As(err, &fe)
	return fe, ok
}

func TestParseGolden(t *testing.T) {
	if len(golden) != 8+144+10 {
		t.Fatalf("golden is %d bytes, want 162", len(golden))
	}
	f, err := Parse(golden, "golden")
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Names(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Names() = %q", got)
	}
	if got := f.Metadata(); len(got) != 1 || got["format"] != "pt" {
		t.Errorf("Metadata() = %v", got)
	}
	a, shape, err := f.Float32("a")
	if err != nil || !slices.Equal(a, []float32{1, -2.5}) || !slices.Equal(shape, []int64{2}) {
		t.Errorf("Float32(a) = %v, %v, %v", a, shape, err)
	}
	b, shape, err := f.Float32("b")
	if err != nil || !slices.Equal(b, []float32{-2.5}) || len(shape) != 0 {
		t.Errorf("Float32(b) = %v, %v, %v", b, shape, err)
	}
	info, err := f.Info("b")
	if err != nil || info.DType != "BF16" || len(info.Shape) != 0 || info.NumElements() != 1 {
		t.Errorf("Info(b) = %+v, %v", info, err)
	}
	raw, info, err := f.Raw("a")
	if err != nil || !bytes.Equal(raw, golden[152:160]) || info.DType != "F32" {
		t.Errorf("Raw(a) = %x, %+v, %v", raw, info, err)
	}
}

// TestParsePythonStyle accepts what other writers produce: entries and
// fields in any order, a layout not sorted by name, whitespace, metadata
// anywhere, and an F16 tensor.
func TestParsePythonStyle(t *testing.T) {
	hdr := ` { "z" : {"data_offsets": [0, 4], "shape": [1], "dtype": "F32"},
		"__metadata__": {"format": "pt", "note": "\u00e9\n"},
		"a": {"dtype": "F16", "shape": [2], "data_offsets": [4, 8]},
		"e": {"dtype": "U8", "shape": [0], "data_offsets": [8, 8]} }   `
	data := []byte{0, 0, 0x80, 0x3f, 0x00, 0x3c, 0x00, 0xc1}
	f, err := Parse(file(hdr, data), "py")
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Names(); !slices.Equal(got, []string{"a", "e", "z"}) {
		t.Errorf("Names() = %q", got)
	}
	if got := f.Metadata()["note"]; got != "é\n" {
		t.Errorf("metadata note = %q", got)
	}
	if v, _, err := f.Float32("a"); err != nil || !slices.Equal(v, []float32{1, -2.5}) {
		t.Errorf("Float32(a) = %v, %v", v, err)
	}
	if v, _, err := f.Float32("z"); err != nil || !slices.Equal(v, []float32{1}) {
		t.Errorf("Float32(z) = %v, %v", v, err)
	}
	if raw, info, err := f.Raw("e"); err != nil || len(raw) != 0 || !slices.Equal(info.Shape, []int64{0}) {
		t.Errorf("Raw(e) = %v, %+v, %v", raw, info, err)
	}
}

func TestParseF64(t *testing.T) {
	data := binary.LittleEndian.AppendUint64(nil, math.Float64bits(0.1))
	f, err := Parse(file(`{"x":{"dtype":"F64","shape":[],"data_offsets":[0,8]}}`, data), "f64")
	if err != nil {
		t.Fatal(err)
	}
	if v, _, err := f.Float32("x"); err != nil || v[0] != float32(0.1) {
		t.Errorf("Float32(x) = %v, %v", v, err)
	}
}

func TestParseErrors(t *testing.T) {
	f32 := func(name string, begin, end int) string {
		return `"` + name + `":{"dtype":"F32","shape":[` + strconv.Itoa((end-begin)/4) + `],"data_offsets":[` + strconv.Itoa(begin) + `,` + strconv.Itoa(end) + `]}`
	}
	huge := binary.LittleEndian.AppendUint64(nil, 1<<40)
	for _, c := range []struct {
		name   string
		data   []byte
		kind   error
		tensor string
		detail string
	}{
		{"empty file", nil, ErrHeader, "", "shorter than the 8-byte header length"},
		{"truncated header length", []byte{8, 0, 0}, ErrHeader, "", "shorter than the 8-byte header length"},
		{"header length beyond file", append(binary.LittleEndian.AppendUint64(nil, 100), "{}"...), ErrHeader, "", "header length 100 goes beyond the end of the 10-byte file"},
		{"header length over limit", append(huge, "{}"...), ErrHeader, "", "exceeds the limit"},
		{"not UTF-8", file("{\"\xff\":{}}", nil), ErrHeader, "", "not valid UTF-8"},
		{"invalid JSON", file(`{"a":`, nil), ErrHeader, "a", "header JSON ends early"},
		{"invalid JSON syntax", file(`{"a" 1}`, nil), ErrHeader, "a", "invalid JSON"},
		{"invalid JSON at top level", file(`{,}`, nil), ErrHeader, "", "invalid JSON"},
		{"trailing comma", file(`{"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]},}`, make([]byte, 4)), ErrHeader, "", "invalid JSON"},
		{"not an object", file(`[]`, nil), ErrHeader, "", `expected "{", found "["`},
		{"empty header", file(``, nil), ErrHeader, "", "ends early"},
		{"trailing data", file(`{}x`, nil), ErrHeader, "", "after the header object"},
		{"second object", file(`{} {}`, nil), ErrHeader, "", `unexpected { after the header object`},
		{"entry not an object", file(`{"a":1}`, nil), ErrHeader, "a", `expected "{", found number 1`},
		{"unknown dtype", file(`{"a":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}}`, []byte{0}), ErrDType, "a", `dtype "F8"`},
		{"dtype not a string", file(`{"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), ErrHeader, "a", "expected a string, found number 4"},
		{"shape/offset mismatch", file(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8)), ErrShape, "a", "shape [3] of F32 needs 12 bytes, data_offsets [0, 8] hold 8"},
		{"scalar needs one element", file(`{"a":{"dtype":"I64","shape":[],"data_offsets":[0,0]}}`, nil), ErrShape, "a", "needs 8 bytes"},
		{"shape overflow", file(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}`, nil), ErrShape, "a", "overflows"},
		{"negative dimension", file(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}`, nil), ErrHeader, "a", "shape holds -1"},
		{"fractional dimension", file(`{"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}`, make([]byte, 4)), ErrHeader, "a", "shape holds 1.0"},
		{"dimension too large", file(`{"a":{"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,0]}}`, nil), ErrHeader, "a", "not an integer in"},
		{"overlapping offsets", file(`{`+f32("a", 0, 8)+`,`+f32("b", 4, 12)+`}`, make([]byte, 12)), ErrHeader, "b", "overlap the previous tensor, which ends at 8"},
		{"same offsets", file(`{`+f32("a", 0, 4)+`,`+f32("b", 0, 4)+`}`, make([]byte, 4)), ErrHeader, "b", "overlap"},
		{"gapped offsets", file(`{`+f32("a", 0, 4)+`,`+f32("b", 8, 12)+`}`, make([]byte, 12)), ErrHeader, "b", "leave a gap after the previous tensor, which ends at 4"},
		{"first offset not zero", file(`{`+f32("a", 4, 8)+`}`, make([]byte, 8)), ErrHeader, "a", "gap"},
		{"data beyond the buffer", file(`{`+f32("a", 0, 8)+`}`, make([]byte, 4)), ErrHeader, "a", "go beyond the 4-byte data buffer"},
		{"trailing bytes in buffer", file(`{`+f32("a", 0, 4)+`}`, make([]byte, 6)), ErrHeader, "", "tensors cover 4 bytes of the 6-byte data buffer"},
		{"offsets reversed", file(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}`, make([]byte, 4)), ErrHeader, "a", "end before they begin"},
		{"one offset", file(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[0]}}`, nil), ErrHeader, "a", "data_offsets has 1 numbers, want 2"},
		{"missing field", file(`{"a":{"dtype":"U8","shape":[0]}}`, nil), ErrHeader, "a", `missing field "data_offsets"`},
		{"unknown field", file(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":1}}`, nil), ErrHeader, "a", `unknown field "x"`},
		{"duplicate field", file(`{"a":{"dtype":"U8","dtype":"U8","shape":[0],"data_offsets":[0,0]}}`, nil), ErrHeader, "a", `field "dtype" appears twice`},
		{"duplicate tensor", file(`{`+f32("a", 0, 4)+`,`+f32("a", 0, 4)+`}`, make([]byte, 4)), ErrDuplicate, "a", "appears twice"},
		{"duplicate metadata", file(`{"__metadata__":{},"__metadata__":{}}`, nil), ErrDuplicate, "__metadata__", "appears twice"},
		{"metadata not strings", file(`{"__metadata__":{"epoch":3}}`, nil), ErrHeader, "__metadata__", `value of "epoch" must be a string, found number 3`},
		{"metadata not an object", file(`{"__metadata__":"pt"}`, nil), ErrHeader, "__metadata__", "expected an object of strings"},
		{"metadata duplicate key", file(`{"__metadata__":{"k":"1","k":"2"}}`, nil), ErrDuplicate, "__metadata__", `key "k" appears twice`},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, err := Parse(c.data, "bad.safetensors")
			if err == nil {
				t.Fatalf("Parse accepted it: %q", f.Names())
			}
			if !errors.Is(err, c.kind) {
				t.Errorf("error %q is not %v", err, c.kind)
			}
			fe, ok := asFormatError(err)
			if !ok {
				t.Fatalf("error %q is not a *FormatError", err)
			}
			if fe.File != "bad.safetensors" || fe.Tensor != c.tensor {
				t.Errorf("error names file %q tensor %q, want bad.safetensors and %q", fe.File, fe.Tensor, c.tensor)
			}
			if !strings.Contains(fe.Detail, c.detail) {
				t.Errorf("detail %q does not contain %q", fe.Detail, c.detail)
			}
			if !strings.HasPrefix(err.Error(), "safetensors: bad.safetensors: ") {
				t.Errorf("message %q does not name the file", err)
			}
		})
	}
}

func TestLookupNotFound(t *testing.T) {
	f, err := Parse(golden, "golden")
	if err != nil {
		t.Fatal(err)
	}
	_, err1 := f.Info("missing")
	_, _, err2 := f.Raw("missing")
	_, _, err3 := f.Float32("missing")
	for _, err := range []error{err1, err2, err3} {
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("error %v is not ErrNotFound", err)
		}
		if want := `safetensors: golden: tensor "missing": tensor not found`; err == nil || err.Error() != want {
			t.Errorf("error = %v, want %s", err, want)
		}
	}
}

func TestFloat32WrongDType(t *testing.T) {
	f, err := Parse(file(`{"n":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), "ints")
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = f.Float32("n")
	if !errors.Is(err, ErrDType) || !strings.Contains(err.Error(), `tensor "n": unsupported dtype: cannot convert I32 to float32`) {
		t.Errorf("Float32(n) error = %v", err)
	}
}

// TestInfoIsACopy checks that callers cannot change a File through the
// slices and maps it returns.
func TestInfoIsACopy(t *testing.T) {
	f, err := Parse(golden, "golden")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := f.Info("a")
	info.Shape[0] = 99
	f.Metadata()["format"] = "tf"
	f.Names()[0] = "zz"
	info, _ = f.Info("a")
	if info.Shape[0] != 2 || f.Metadata()["format"] != "pt" || f.Names()[0] != "a" {
		t.Error("File changed through a returned value")
	}
}

func TestOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "model.safetensors")
	if err := os.WriteFile(path, golden, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if v, _, err := f.Float32("a"); err != nil || !slices.Equal(v, []float32{1, -2.5}) {
		t.Errorf("Float32(a) = %v, %v", v, err)
	}

	bad := filepath.Join(t.TempDir(), "bad.safetensors")
	if err := os.WriteFile(bad, golden[:100], 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Open(bad)
	if fe, ok := asFormatError(err); !ok || fe.File != bad || !errors.Is(err, ErrHeader) {
		t.Errorf("Open(truncated) error = %v", err)
	}

	_, err = Open(filepath.Join(t.TempDir(), "missing.safetensors"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open(missing) error = %v, want os.ErrNotExist", err)
	}
}
