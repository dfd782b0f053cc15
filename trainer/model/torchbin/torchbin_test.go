package torchbin

import (
	"archive/zip"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The files under testdata were written by torch.save (PyTorch 1.13,
// Debian's python3-torch) from ../testdata/gen_torch.py.

// TestSmallExact reads every dtype and a transposed view, in both formats,
// and compares with the values the script saved.
func TestSmallExact(t *testing.T) {
	for _, file := range []string{"small.bin", "small_legacy.bin"} {
		t.Run(file, func(t *testing.T) {
			f, err := Open(filepath.Join("testdata", file))
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Names(); !slices.Equal(got, []string{"w", "h", "b", "i"}) {
				t.Errorf("names %v", got)
			}
			for _, tc := range []struct {
				name  string
				dtype DType
				shape []int64
				want  []float32
			}{
				// arange(6).view(2, 3).t(): a [3, 2] view with strides (1, 3)
				{"w", F32, []int64{3, 2}, []float32{0, 3, 1, 4, 2, 5}},
				{"h", F16, []int64{3}, []float32{1.5, -2, 65504}},
				{"b", BF16, []int64{2}, []float32{0.5, 3}},
			} {
				info, err := f.Info(tc.name)
				if err != nil || info.DType != tc.dtype || !slices.Equal(info.Shape, tc.shape) {
					t.Errorf("Info(%s) = %+v, %v; want %s %v", tc.name, info, err, tc.dtype, tc.shape)
				}
				got, shape, err := f.Float32(tc.name)
				if err != nil || !slices.Equal(got, tc.want) || !slices.Equal(shape, tc.shape) {
					t.Errorf("Float32(%s) = %v %v, %v; want %v %v", tc.name, got, shape, err, tc.want, tc.shape)
				}
			}
			if info, _ := f.Info("i"); info.DType != I64 {
				t.Errorf("i is %s, want I64", info.DType)
			}
			if _, _, err := f.Float32("i"); err == nil || !strings.Contains(err.Error(), "not a float type") {
				t.Errorf("Float32 of an int64 tensor: %v", err)
			}
		})
	}
}

// TestSharedStorage: tensors that share a storage (tied weights, a view at
// an offset) read the one storage torch wrote.
func TestSharedStorage(t *testing.T) {
	f, err := Open(filepath.Join("testdata", "shared.bin"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		shape []int64
		want  []float32
	}{
		{"a", []int64{6}, []float32{0, 1, 2, 3, 4, 5}},
		{"b", []int64{6}, []float32{0, 1, 2, 3, 4, 5}},
		{"c", []int64{2, 2}, []float32{2, 3, 4, 5}},
	} {
		got, shape, err := f.Float32(tc.name)
		if err != nil || !slices.Equal(got, tc.want) || !slices.Equal(shape, tc.shape) {
			t.Errorf("Float32(%s) = %v %v, %v; want %v %v", tc.name, got, shape, err, tc.want, tc.shape)
		}
	}
}

// TestHostilePickleRefused: pickles that call os.system (GLOBAL, protocol
// 2) and builtins.exec (STACK_GLOBAL, protocol 4), as a Python unpickler
// would, are refused with the name of what they import, and nothing runs.
func TestHostilePickleRefused(t *testing.T) {
	const marker = "/tmp/loraft-torchbin-pwned" // what the pickles would create
	if err := os.Remove(marker); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, tc := range []struct{ file, names string }{
		{"evil_global.bin", "posix.system"},
		{"evil_stack.bin", "builtins.exec"},
	} {
		_, err := Open(filepath.Join("testdata", tc.file))
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.names) {
			t.Errorf("%s: %v; want ErrRefused naming %s", tc.file, err, tc.names)
		}
	}
	// The same pickle as a bare file (what torch's legacy format starts with)
	// is refused while reading the first header pickle.
	zr, err := zip.OpenReader(filepath.Join("testdata", "evil_global.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	rc, err := zr.File[0].Open()
	if err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	if _, err := raw.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if _, err := Parse(bytes.NewReader(raw.Bytes()), int64(raw.Len()), "raw.pkl"); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "posix.system") {
		t.Errorf("raw pickle: %v; want ErrRefused naming posix.system", err)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s exists: pickled code ran (%v)", marker, err)
	}
}

// rewriteZip copies a torch zip, letting edit change (or drop, with nil)
// each record and choose its compression.
func rewriteZip(t *testing.T, src string, edit func(name string, b []byte) ([]byte, uint16)) []byte {
	t.Helper()
	zr, err := zip.OpenReader(src)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, zf := range zr.File {
		rc, err := zf.Open()
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if _, err := b.ReadFrom(rc); err != nil {
			t.Fatal(err)
		}
		rc.Close()
		data, method := edit(zf.Name, b.Bytes())
		if data == nil {
			continue
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: zf.Name, Method: method})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestMalformedRefused: damaged copies of a real file fail with ErrFormat
// or ErrRefused and a message naming what is wrong.
func TestMalformedRefused(t *testing.T) {
	src := filepath.Join("testdata", "small.bin")
	keep := func(_ string, b []byte) ([]byte, uint16) { return b, zip.Store }
	for _, tc := range []struct {
		name    string
		edit    func(string, []byte) ([]byte, uint16)
		kind    error
		message string
	}{
		{"copy", keep, nil, ""},
		{"storage record missing", func(n string, b []byte) ([]byte, uint16) {
			if strings.HasSuffix(n, "/data/1") {
				return nil, 0
			}
			return b, zip.Store
		}, ErrFormat, "no zip record small/data/1"},
		{"storage record short", func(n string, b []byte) ([]byte, uint16) {
			if strings.HasSuffix(n, "/data/0") {
				return b[:len(b)-4], zip.Store
			}
			return b, zip.Store
		}, ErrFormat, "has 20 bytes, FloatStorage × 6 needs 24"},
		{"storage record compressed", func(n string, b []byte) ([]byte, uint16) {
			if strings.HasSuffix(n, "/data/0") {
				return b, zip.Deflate
			}
			return b, zip.Store
		}, ErrFormat, "is compressed"},
		{"unknown storage class", func(n string, b []byte) ([]byte, uint16) {
			return bytes.Replace(b, []byte("torch\nFloatStorage\n"), []byte("torch\nTypedStorage\n"), 1), zip.Store
		}, ErrRefused, "torch.TypedStorage"},
		{"pickle cut short", func(n string, b []byte) ([]byte, uint16) {
			if strings.HasSuffix(n, "data.pkl") {
				return b[:len(b)/2], zip.Store
			}
			return b, zip.Store
		}, ErrFormat, ""},
		{"string longer than the pickle", func(n string, b []byte) ([]byte, uint16) {
			if strings.HasSuffix(n, "data.pkl") {
				i := bytes.IndexByte(b, 'X') // BINUNICODE of the first key
				b = slices.Clone(b)
				copy(b[i+1:], []byte{0xff, 0xff, 0xff, 0x7f})
			}
			return b, zip.Store
		}, ErrFormat, "declares 2147483647 bytes"},
		{"view outside its storage", func(n string, b []byte) ([]byte, uint16) {
			if strings.HasSuffix(n, "data.pkl") {
				// the [3, 2] view's stride (1, 3) becomes (1, 9)
				b = bytes.Replace(b, []byte{'K', 1, 'K', 3, 0x86}, []byte{'K', 1, 'K', 9, 0x86}, 1)
			}
			return b, zip.Store
		}, ErrFormat, "stride [1 9] at offset 0 lies outside storage 0 (6 elements)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := rewriteZip(t, src, tc.edit)
			_, err := Parse(bytes.NewReader(data), int64(len(data)), "small.bin")
			if tc.kind == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("error %v; want %v containing %q", err, tc.kind, tc.message)
			}
		})
	}
}

// FuzzParse: no input makes the reader panic or read outside its bounds,
// and whatever it accepts converts without error or panic.
func FuzzParse(f *testing.F) {
	for _, p := range []string{"small.bin", "small_legacy.bin", "shared.bin", "evil_global.bin", "evil_stack.bin"} {
		b, err := os.ReadFile(filepath.Join("testdata", p))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 4 {
			return
		}
		file, err := Parse(bytes.NewReader(data), int64(len(data)), "fuzz")
		if err != nil {
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrRefused) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		for _, n := range file.Names() {
			info, err := file.Info(n)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := file.Float32(n); err != nil && (info.DType == F32 || info.DType == F16 || info.DType == BF16 || info.DType == F64) {
				t.Fatalf("Float32(%s): %v", n, err)
			}
		}
	})
}
