package allreduce

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// Chunks carry float32 values as little-endian IEEE-754 bits. Values are
// moved as bits, so a reduced value reaches every rank unchanged.

// littleEndian reports whether float32 values are stored in memory as the
// wire format, so encode and decodeInto can copy bytes.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// bytesOf views v's memory as bytes (always aligned: bytes need none).
func bytesOf(v []float32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), 4*len(v))
}

// encode returns src as little-endian bytes in a buffer of the chunk pool.
func encode(src []float32) []byte {
	b := getBuf(4 * len(src))
	if littleEndian {
		copy(b, bytesOf(src))
		return b
	}
	for i, v := range src {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

// decodeInto copies the values in b into dst; len(b) == 4*len(dst).
func decodeInto(dst []float32, b []byte) {
	b = b[:4*len(dst)]
	if littleEndian {
		copy(bytesOf(dst), b)
		return
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
}

// addInto adds the values in b to dst and writes the sums back into b, so b
// can be forwarded as is; len(b) == 4*len(dst). Each sum is dst[i] + b[i] in
// float32, computed once.
func addInto(dst []float32, b []byte) {
	b = b[:4*len(dst)]
	if littleEndian && len(b) > 0 && uintptr(unsafe.Pointer(unsafe.SliceData(b)))%4 == 0 {
		addFloats(dst, unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(dst)))
		return
	}
	for i := range dst {
		s := dst[i] + math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		dst[i] = s
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(s))
	}
}
