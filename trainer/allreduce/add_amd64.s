//go:build !race

#include "textflag.h"

// func addFloats(dst, src []float32)
//
// For i < len(src): s = dst[i] + src[i] (ADDPS/ADDSS: IEEE-754 single
// precision, round to nearest, the same operation and operand order as the Go
// expression dst[i] + src[i] compiles to), dst[i] = s, src[i] = s.
// len(dst) >= len(src).
TEXT ·addFloats(SB), NOSPLIT, $0-48
	MOVQ dst_base+0(FP), DI
	MOVQ src_base+24(FP), SI
	MOVQ src_len+32(FP), CX
	XORQ AX, AX
	MOVQ CX, DX
	ANDQ $~7, DX
	JZ   tail

loop8:
	MOVUPS (DI)(AX*4), X0
	MOVUPS 16(DI)(AX*4), X1
	MOVUPS (SI)(AX*4), X2
	MOVUPS 16(SI)(AX*4), X3
	ADDPS  X2, X0
	ADDPS  X3, X1
	MOVUPS X0, (DI)(AX*4)
	MOVUPS X1, 16(DI)(AX*4)
	MOVUPS X0, (SI)(AX*4)
	MOVUPS X1, 16(SI)(AX*4)
	ADDQ   $8, AX
	CMPQ   AX, DX
	JLT    loop8

tail:
	CMPQ AX, CX
	JGE  done
	MOVSS (DI)(AX*4), X0
	MOVSS (SI)(AX*4), X2
	ADDSS X2, X0
	MOVSS X0, (DI)(AX*4)
	MOVSS X0, (SI)(AX*4)
	INCQ  AX
	JMP   tail

done:
	RET
