// Package safetensors reads and writes Hugging Face's safetensors format:
// loraft loads BERT weights from HF model.safetensors files (F32, F16 or
// BF16), writes LoRA adapters that HF PEFT loads as adapter_model.safetensors,
// and writes checkpoint tensors such as AdamW moments.
//
// A file is an 8-byte little-endian header length N, N bytes of UTF-8 JSON,
// and a data buffer. The JSON maps each tensor name to
// {"dtype", "shape", "data_offsets": [begin, end]}, offsets relative to the
// buffer, plus an optional "__metadata__" map of strings. Supported dtypes
// are F64, F32, F16, BF16, I64, I32, I16, I8, U8 and BOOL, little-endian and
// in C order.
//
// Reading: Open or Parse validates the whole header before returning (the
// length prefix, UTF-8, JSON syntax, duplicate keys, unknown fields, each
// dtype, each shape against its byte length, and that the offsets tile the
// buffer with no gap, overlap or trailing bytes). File.Float32 converts F32,
// F16, BF16 and F64 tensors to float32. Errors are *FormatError values naming
// the file and tensor and unwrapping to ErrHeader, ErrNotFound, ErrDType,
// ErrShape or ErrDuplicate.
//
// Writing: Writer produces byte-identical output for identical inputs
// regardless of call order, and WriteFile replaces its target atomically.
// See Writer for the exact layout.
//
// # Why not a library
//
// The project prefers a well-kept library. github.com/nlpodyssey/safetensors
// (v0.0.0-20250209183917-bfb01cc25f7c, the version on the module proxy) was
// read and tried. It was not adopted, for these reasons:
//
//   - It cannot write a scalar. NewTensorView counts zero elements for shape
//     [], so a 4-byte F32 scalar is rejected.
//   - Its reader accepts malformed headers: a duplicate tensor key is taken
//     silently (the last one wins), and invalid UTF-8 in names becomes U+FFFD.
//   - Its header is encoding/json's sorted map, so "__metadata__" comes
//     after any name that starts with a digit or capital letter, and names
//     have <, > and & escaped.
//   - Its errors are plain strings with no sentinels, and it has no F16 or
//     BF16 conversion and no atomic file write.
//
// Wrapping it would have meant checking its input and output again and
// writing the conversions and the file handling anyway. That is nearly all
// of this package, which is a few hundred lines of standard library code.
// So the package implements the format itself.
package safetensors
