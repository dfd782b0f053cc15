package safetensors

import (
	"errors"
	"strconv"
)

// Sentinel errors. Every error this package returns about a file's contents
// or a Writer's input is a *FormatError that unwraps to one of them, so
// callers test the kind with errors.Is and read the position with errors.As.
var (
	// ErrHeader reports a malformed file: a short or oversized header length,
	// a header that is not UTF-8 JSON of the expected shape, data_offsets
	// that overlap, leave gaps or point past the data buffer, or a tensor
	// name the format cannot hold.
	ErrHeader = errors.New("invalid header")
	// ErrNotFound reports a lookup of a tensor name the file does not hold.
	ErrNotFound = errors.New("tensor not found")
	// ErrDType reports a dtype the format or the requested conversion does
	// not support.
	ErrDType = errors.New("unsupported dtype")
	// ErrShape reports a shape that disagrees with the byte length of the
	// data (in a file's data_offsets or a Writer's input), a shape whose
	// byte length overflows, or a negative dimension given to a Writer (in a
	// file, a negative dimension is an ErrHeader).
	ErrShape = errors.New("shape mismatch")
	// ErrDuplicate reports a tensor name added to a Writer twice, or a key
	// that appears twice in a file's header.
	ErrDuplicate = errors.New("duplicate name")
)

// FormatError is the error for a problem in a safetensors file or in a
// Writer's input, positioned like encoding/csv's ParseError. It unwraps to
// Err, one of the sentinel errors above.
type FormatError struct {
	// File is the path given to Open or WriteFile, or the name given to
	// Parse; empty for Writer errors that concern no file.
	File string
	// Tensor is the tensor (or metadata key) concerned; empty when the
	// problem is not about one tensor.
	Tensor string
	// Err is the kind of problem: ErrHeader, ErrNotFound, ErrDType, ErrShape
	// or ErrDuplicate.
	Err error
	// Detail says what exactly was wrong; it may be empty.
	Detail string
}

// Error formats the error as
// "safetensors: FILE: tensor "NAME": KIND: DETAIL", leaving out empty parts.
func (e *FormatError) Error() string {
	b := []byte("safetensors: ")
	if e.File != "" {
		b = append(b, e.File...)
		b = append(b, ": "...)
	}
	if e.Tensor != "" {
		b = append(b, "tensor "...)
		b = strconv.AppendQuote(b, e.Tensor)
		b = append(b, ": "...)
	}
	if e.Err != nil {
		b = append(b, e.Err.Error()...)
	} else {
		b = append(b, "error"...)
	}
	if e.Detail != "" {
		b = append(b, ": "...)
		b = append(b, e.Detail...)
	}
	return string(b)
}

// Unwrap returns Err, so that errors.Is(err, ErrShape) and the like work.
func (e *FormatError) Unwrap() error { return e.Err }
