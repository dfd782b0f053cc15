package torchbin

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// argKind is how a pickle opcode's inline argument is laid out.
type argKind uint8

const (
	argNone    argKind = iota
	argFixed           // n bytes
	argLine            // up to and including '\n'
	argTwoLine         // two lines (GLOBAL, INST: module and name)
	argLen1            // 1-byte length, then that many bytes
	argLen4            // 4-byte little-endian length, then that many bytes
	argLen8            // 8-byte little-endian length, then that many bytes
	argFrame           // 8-byte frame length (the frame's bytes are opcodes scanned in turn)
	argRefused         // never allowed in a state dict
)

type opInfo struct {
	name string
	kind argKind
	n    int // bytes of an argFixed argument
}

// ops is pickle's opcode table (CPython's pickletools, protocols 0–5).
var ops = map[byte]opInfo{
	'(': {"MARK", argNone, 0}, '.': {"STOP", argNone, 0}, '0': {"POP", argNone, 0},
	'1': {"POP_MARK", argNone, 0}, '2': {"DUP", argNone, 0}, 'F': {"FLOAT", argLine, 0},
	'I': {"INT", argLine, 0}, 'J': {"BININT", argFixed, 4}, 'K': {"BININT1", argFixed, 1},
	'L': {"LONG", argLine, 0}, 'M': {"BININT2", argFixed, 2}, 'N': {"NONE", argNone, 0},
	'P': {"PERSID", argRefused, 0}, 'Q': {"BINPERSID", argNone, 0}, 'R': {"REDUCE", argNone, 0},
	'S': {"STRING", argLine, 0}, 'T': {"BINSTRING", argLen4, 0}, 'U': {"SHORT_BINSTRING", argLen1, 0},
	'V': {"UNICODE", argLine, 0}, 'X': {"BINUNICODE", argLen4, 0}, 'a': {"APPEND", argNone, 0},
	'b': {"BUILD", argNone, 0}, 'c': {"GLOBAL", argTwoLine, 0}, 'd': {"DICT", argNone, 0},
	'}': {"EMPTY_DICT", argNone, 0}, 'e': {"APPENDS", argNone, 0}, 'g': {"GET", argLine, 0},
	'h': {"BINGET", argFixed, 1}, 'i': {"INST", argRefused, 0}, 'j': {"LONG_BINGET", argFixed, 4},
	'l': {"LIST", argNone, 0}, ']': {"EMPTY_LIST", argNone, 0}, 'o': {"OBJ", argRefused, 0},
	'p': {"PUT", argLine, 0}, 'q': {"BINPUT", argFixed, 1}, 'r': {"LONG_BINPUT", argFixed, 4},
	's': {"SETITEM", argNone, 0}, 't': {"TUPLE", argNone, 0}, ')': {"EMPTY_TUPLE", argNone, 0},
	'u': {"SETITEMS", argNone, 0}, 'G': {"BINFLOAT", argFixed, 8},
	0x80: {"PROTO", argFixed, 1}, 0x81: {"NEWOBJ", argRefused, 0}, 0x82: {"EXT1", argRefused, 0},
	0x83: {"EXT2", argRefused, 0}, 0x84: {"EXT4", argRefused, 0}, 0x85: {"TUPLE1", argNone, 0},
	0x86: {"TUPLE2", argNone, 0}, 0x87: {"TUPLE3", argNone, 0}, 0x88: {"NEWTRUE", argNone, 0},
	0x89: {"NEWFALSE", argNone, 0}, 0x8a: {"LONG1", argLen1, 0}, 0x8b: {"LONG4", argLen4, 0},
	'B': {"BINBYTES", argLen4, 0}, 'C': {"SHORT_BINBYTES", argLen1, 0},
	0x8c: {"SHORT_BINUNICODE", argLen1, 0}, 0x8d: {"BINUNICODE8", argLen8, 0},
	0x8e: {"BINBYTES8", argLen8, 0}, 0x8f: {"EMPTY_SET", argNone, 0}, 0x90: {"ADDITEMS", argNone, 0},
	0x91: {"FROZENSET", argNone, 0}, 0x92: {"NEWOBJ_EX", argRefused, 0}, 0x93: {"STACK_GLOBAL", argNone, 0},
	0x94: {"MEMOIZE", argNone, 0}, 0x95: {"FRAME", argFrame, 0}, 0x96: {"BYTEARRAY8", argLen8, 0},
	0x97: {"NEXT_BUFFER", argRefused, 0}, 0x98: {"READONLY_BUFFER", argRefused, 0},
}

// scanPickle walks one pickle in data without building anything and returns
// its length (through STOP). It is the guard in front of gopickle, which
// allocates whatever length a pickle declares before reading: every length
// here must fit in the bytes that are left, so the unpickler that follows
// never allocates more than the pickle's own size. It also refuses, by name,
// opcodes a state dict never needs (extension registry, out-of-band buffers,
// INST/OBJ/NEWOBJ class construction, text persistent ids) and GLOBAL
// imports outside the allow-list (STACK_GLOBAL names come from the stack and
// are checked by findClass when the unpickler reaches them).
func scanPickle(data []byte, what string) (int, error) {
	pos := 0
	for pos < len(data) {
		at := pos
		op := data[pos]
		pos++
		info, ok := ops[op]
		if !ok {
			return 0, fmt.Errorf("%w: %s: unknown pickle opcode 0x%02x at byte %d", ErrFormat, what, op, at)
		}
		left := len(data) - pos
		need := 0
		switch info.kind {
		case argRefused:
			return 0, fmt.Errorf("%w: %s: pickle opcode %s at byte %d (never in a PyTorch state dict)", ErrRefused, what, info.name, at)
		case argFixed:
			need = info.n
		case argLine:
			i := bytes.IndexByte(data[pos:], '\n')
			if i < 0 {
				return 0, fmt.Errorf("%w: %s: %s at byte %d has no end of line", ErrFormat, what, info.name, at)
			}
			need = i + 1
		case argTwoLine:
			i := bytes.IndexByte(data[pos:], '\n')
			j := -1
			if i >= 0 {
				j = bytes.IndexByte(data[pos+i+1:], '\n')
			}
			if j < 0 {
				return 0, fmt.Errorf("%w: %s: %s at byte %d has no end of line", ErrFormat, what, info.name, at)
			}
			module, name := string(data[pos:pos+i]), string(data[pos+i+1:pos+i+1+j])
			if !allowedGlobal(module, name) {
				return 0, refusedClass(what, module, name)
			}
			need = i + 1 + j + 1
		case argLen1, argLen4, argLen8:
			w := map[argKind]int{argLen1: 1, argLen4: 4, argLen8: 8}[info.kind]
			if left < w {
				return 0, fmt.Errorf("%w: %s: %s at byte %d is cut off", ErrFormat, what, info.name, at)
			}
			var n uint64
			switch w {
			case 1:
				n = uint64(data[pos])
			case 4:
				n = uint64(binary.LittleEndian.Uint32(data[pos:]))
				if op == 'T' || op == 0x8b { // signed lengths
					n = uint64(int64(int32(uint32(n))))
				}
			case 8:
				n = binary.LittleEndian.Uint64(data[pos:])
			}
			if n > uint64(left-w) {
				return 0, fmt.Errorf("%w: %s: %s at byte %d declares %d bytes, %d are left", ErrFormat, what, info.name, at, int64(n), left-w)
			}
			need = w + int(n)
		case argFrame:
			if left < 8 {
				return 0, fmt.Errorf("%w: %s: FRAME at byte %d is cut off", ErrFormat, what, at)
			}
			if n := binary.LittleEndian.Uint64(data[pos:]); n > uint64(left-8) {
				return 0, fmt.Errorf("%w: %s: FRAME at byte %d declares %d bytes, %d are left", ErrFormat, what, at, int64(n), left-8)
			}
			need = 8
		}
		if need > left {
			return 0, fmt.Errorf("%w: %s: %s at byte %d is cut off", ErrFormat, what, info.name, at)
		}
		pos += need
		if op == '.' {
			return pos, nil
		}
	}
	return 0, fmt.Errorf("%w: %s: pickle ends without STOP", ErrFormat, what)
}
