// Package nf4 stores frozen weights in the 4-bit NormalFloat (NF4) format of
// QLoRA (arXiv 2305.14314) exactly as bitsandbytes defines it, and rebuilds
// them on the fly with libtorch (through gotch) for the forward pass.
//
// # Format
//
// A tensor is flattened and cut into blocks of [BlockSize] (64) elements. Each
// block keeps one fp32 absmax (the largest |x| in the block; a short last
// block uses its own). Every element is normalised by its block's absmax and
// replaced by the index of the nearest of the 16 NF4 values ([Codebook]); a
// value on the threshold between two codes (their midpoint, rounded to fp32)
// takes the lower code. Two codes share a byte, the first in the high nibble;
// an odd count pads the last byte with the code of 0.0.
//
// With double quantization (DQ) the absmax vector is itself compressed the way
// bitsandbytes' compress_statistics does it: its mean is subtracted
// (AbsmaxOffset) and the centred values are quantized blockwise, in blocks of
// [AbsmaxBlockSize] (256), to bitsandbytes' signed 8-bit dynamic map
// ([DynamicMap]) with one fp32 scale per block. This brings the storage from
// 4.5 to about 4.127 bits per parameter.
//
// # Fidelity to bitsandbytes
//
// Quantization follows the CUDA kernel (kQuantizeBlockwise in
// csrc/kernels.cu): a block is normalised by multiplying with the fp32
// reciprocal of its absmax, NF4 codes come from the kernel's decision tree
// and its fp32 threshold literals, and the 8-bit absmax codes come from the
// kernel's binary search (dQuantize) with fp32 midpoints. Where bitsandbytes'
// result is an artefact of dividing by zero, this package picks the code of
// 0.0 instead; see [Quantize]. The dynamic map's last bits depend on the
// PyTorch build that made it; see [DynamicMap].
//
// # Two dequantizers
//
// [Quantized.Dequantize] is the pure-Go reference. [Quantized.Upload] puts the
// same pieces on a device as a [Weight], and [Weight.Dequantize] rebuilds the
// weight there in one call into libtch.so: a fused loop on CPU, libtorch
// tensor ops elsewhere ([Weight.DequantizeOps]); in fp32 both equal the
// reference bit for bit.
//
// gotch tensors own C memory that Go's garbage collector does not see: every
// tensor this package creates is dropped before it returns, except the result
// of [Weight.Dequantize], which the caller owns, and the tensors of a Weight,
// which [Weight.Drop] frees.
package nf4
