package safetensors

import (
	"bytes"
	"errors"
	"maps"
	"slices"
	"testing"
)

// FuzzParse checks that Parse never panics, that every rejection is a
// *FormatError with a sentinel, and that every accepted file round-trips
// through the Writer to an equivalent file, which the Writer then
// reproduces byte for byte.
func FuzzParse(f *testing.F) {
	f.Add(golden)
	f.Add(file(`{}`, nil))
	f.Add(file(`{"__metadata__":null}`, nil))
	f.Add(file(` {"z":{"data_offsets":[0,4],"shape":[1],"dtype":"F32"},"__metadata__":{"k":"v"},"a":{"dtype":"F16","shape":[2],"data_offsets":[4,8]},"e":{"dtype":"U8","shape":[0],"data_offsets":[8,8]}} `,
		[]byte{0, 0, 0x80, 0x3f, 0x00, 0x3c, 0x00, 0xc1}))
	f.Add(file(`{"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"b":{"dtype":"BOOL","shape":[2,0],"data_offsets":[8,8]}}`, make([]byte, 8)))
	f.Add(file(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data, "fuzz")
		if err != nil {
			fe, ok := asFormatError(err)
			if !ok {
				t.Fatalf("error %v is not a *FormatError", err)
			}
			if !errors.Is(err, ErrHeader) && !errors.Is(err, ErrDType) && !errors.Is(err, ErrShape) && !errors.Is(err, ErrDuplicate) {
				t.Fatalf("error %v has no sentinel", err)
			}
			if fe.File != "fuzz" {
				t.Fatalf("error %v does not name the file", err)
			}
			return
		}
		var w Writer
		for _, name := range p.Names() {
			raw, info, err := p.Raw(name)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.AddRaw(name, info.DType, info.Shape, raw); err != nil {
				t.Fatalf("accepted tensor %q rejected by the Writer: %v", name, err)
			}
			if _, _, err := p.Float32(name); err != nil && !errors.Is(err, ErrDType) {
				t.Fatalf("Float32(%q): %v", name, err)
			}
		}
		for k, v := range p.Metadata() {
			w.SetMetadata(k, v)
		}
		out, err := w.Bytes()
		if err != nil {
			t.Fatalf("Bytes: %v", err)
		}
		q, err := Parse(out, "rewritten")
		if err != nil {
			t.Fatalf("Writer output rejected: %v\n%q", err, out)
		}
		if !slices.Equal(p.Names(), q.Names()) || !maps.Equal(p.Metadata(), q.Metadata()) {
			t.Fatalf("names or metadata changed: %q %v → %q %v", p.Names(), p.Metadata(), q.Names(), q.Metadata())
		}
		for _, name := range p.Names() {
			r1, i1, _ := p.Raw(name)
			r2, i2, err := q.Raw(name)
			if err != nil || i1.DType != i2.DType || !slices.Equal(i1.Shape, i2.Shape) || !bytes.Equal(r1, r2) {
				t.Fatalf("tensor %q changed: %+v %x → %+v %x (%v)", name, i1, r1, i2, r2, err)
			}
		}
		// The Writer's output is canonical: rewriting it is the identity.
		var w2 Writer
		for _, name := range q.Names() {
			raw, info, _ := q.Raw(name)
			if err := w2.AddRaw(name, info.DType, info.Shape, raw); err != nil {
				t.Fatal(err)
			}
		}
		for k, v := range q.Metadata() {
			w2.SetMetadata(k, v)
		}
		if again, err := w2.Bytes(); err != nil || !bytes.Equal(again, out) {
			t.Fatalf("rewriting the Writer's output changed it (%v)", err)
		}
	})
}
