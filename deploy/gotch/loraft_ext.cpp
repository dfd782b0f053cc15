// loraft's additions to gotch's C API, compiled into libtch.so by
// deploy/build-shim.sh (stubbed_ops.inc is written by that script).
#include "torch_api.h"
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <cstring>
#include <string>
#include <vector>

namespace {

// store writes v as float, or as bfloat16 rounded to nearest even. The
// rounding is c10's without its NaN test, which keeps the conversion loop
// vectorizable: trainer/nf4 only holds finite codes and absmax, so every
// product is finite.
inline void store(float *o, float v) { *o = v; }
inline void store(at::BFloat16 *o, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits += UINT32_C(0x7FFF) + ((bits >> 16) & 1);
  *o = at::BFloat16(static_cast<uint16_t>(bits >> 16), at::BFloat16::from_bits());
}

// dequantize_blocks writes blocks [b0, b1) of an NF4 weight into out (see
// loraft_nf4_dequantize). T is float or at::BFloat16; the float product is
// converted once per element.
template <typename T>
void dequantize_blocks(T *out, const uint8_t *codes, const float *lut,
                       const float *absmax, const uint8_t *absmax_codes,
                       const float *scales, const float *dynmap, float offset,
                       int64_t n, int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1; ++b) {
    float a;
    if (absmax_codes != nullptr) {
      const float scaled = dynmap[absmax_codes[b]] * scales[b / 256];
      a = scaled + offset;
    } else {
      a = absmax[b];
    }
    const int64_t start = b * 64;
    if (start + 64 <= n) {
      // Decode into a float buffer, then convert: storing straight to out
      // would make the compiler reload codes and lut after every store (a
      // uint8_t pointer may alias anything); 2x faster for bfloat16.
      const uint8_t *c = codes + start / 2;
      float block[64];
      for (int j = 0; j < 32; ++j) {
        block[2 * j] = lut[2 * c[j]] * a;
        block[2 * j + 1] = lut[2 * c[j] + 1] * a;
      }
      for (int j = 0; j < 64; ++j) store(out + start + j, block[j]);
      continue;
    }
    for (int64_t i = start; i < n; ++i) { // the short last block
      const uint8_t byte = codes[i / 2];
      store(out + i, lut[2 * byte + (i & 1)] * a);
    }
  }
}

void check(bool ok, const char *what) {
  if (!ok) throw std::invalid_argument(std::string("loraft_nf4_dequantize: ") + what);
}

bool cpu_contiguous(tensor t, at::ScalarType type, int64_t min_numel) {
  return t != nullptr && t->is_cpu() && t->is_contiguous() &&
         t->scalar_type() == type && t->numel() >= min_numel;
}

torch::Tensor nf4_dequantize(tensor packed, tensor pairs, tensor absmax,
                             tensor absmax_codes, tensor scales, tensor offset,
                             tensor dynmap, int64_t n, int64_t *dims,
                             int ndims, int dtype) {
  const bool bf16 = dtype == 15;
  check(bf16 || dtype == 6, "dtype must be float or bfloat16");
  check(n > 0, "no elements");
  const int64_t n_blocks = (n + 63) / 64;
  check(cpu_contiguous(packed, at::kByte, n_blocks * 32), "packed codes must be contiguous CPU uint8 [nBlocks*32]");
  check(cpu_contiguous(pairs, at::kLong, 256), "pairs must be contiguous CPU int64 [256]");
  const float *absmax_p = nullptr;
  const uint8_t *codes_p = nullptr;
  const float *scales_p = nullptr;
  const float *dyn_p = nullptr;
  float off = 0;
  if (absmax_codes != nullptr) {
    check(cpu_contiguous(absmax_codes, at::kByte, n_blocks), "absmax codes must be contiguous CPU uint8 [>= nBlocks]");
    check(cpu_contiguous(scales, at::kFloat, (n_blocks + 255) / 256), "absmax scales must be contiguous CPU float [nBlocks/256]");
    check(cpu_contiguous(dynmap, at::kFloat, 256), "dynamic map must be contiguous CPU float [256]");
    check(cpu_contiguous(offset, at::kFloat, 1), "absmax offset must be a CPU float");
    codes_p = absmax_codes->data_ptr<uint8_t>();
    scales_p = scales->data_ptr<float>();
    dyn_p = dynmap->data_ptr<float>();
    off = offset->data_ptr<float>()[0];
  } else {
    check(cpu_contiguous(absmax, at::kFloat, n_blocks), "absmax must be contiguous CPU float [nBlocks]");
    absmax_p = absmax->data_ptr<float>();
  }
  check(ndims >= 0 && (ndims == 0 || dims != nullptr), "bad shape");
  std::vector<int64_t> shape(dims, dims + ndims);
  torch::Tensor result = at::empty(shape, at::TensorOptions().dtype(bf16 ? at::kBFloat16 : at::kFloat));
  check(result.numel() == n, "shape does not hold n elements");
  const uint8_t *codes = packed->data_ptr<uint8_t>();
  // pairs[b] holds the float32 values of b's two codes in memory order.
  const float *lut = reinterpret_cast<const float *>(pairs->data_ptr<int64_t>());
  // 256 blocks (16K elements) per task: small weights stay on one thread.
  at::parallel_for(0, n_blocks, 256, [&](int64_t b0, int64_t b1) {
    if (bf16) {
      dequantize_blocks(result.data_ptr<at::BFloat16>(), codes, lut, absmax_p, codes_p, scales_p, dyn_p, off, n, b0, b1);
    } else {
      dequantize_blocks(result.data_ptr<float>(), codes, lut, absmax_p, codes_p, scales_p, dyn_p, off, n, b0, b1);
    }
  });
  return result;
}

} // namespace

extern "C" {
const char *loraft_torch_version() { return TORCH_VERSION; }

const char *loraft_stubbed_ops() {
  static const char *ops =
#include "stubbed_ops.inc"
      ;
  return ops;
}

int loraft_cxx11_abi() { return _GLIBCXX_USE_CXX11_ABI; }

// loraft_nf4_dequantize is trainer/nf4's Weight.Dequantize on CPU as one
// fused loop: decode each packed byte's two codes through the float32
// codebook-pair table and scale them by their 64-element block's absmax,
// rebuilt per block from its code under double quantization
// (dynmap[code] * scale + offset). It reads the packed codes once and writes
// the result once, where the equivalent tensor ops make four full-size
// intermediates; blocks are split over libtorch's intra-op threads.
//
// The float arithmetic is the tensor ops' (one multiply and one add for the
// absmax, one multiply per element; this file is compiled with
// -ffp-contract=off so no FMA fuses them), so a float result equals them bit
// for bit; a bfloat16 result is that value rounded to nearest even.
//
// Inputs are contiguous CPU tensors as Weight holds them: packed uint8
// [nBlocks*32]; pairs int64 [256]; either absmax float [nBlocks] (absmax_codes
// null) or absmax_codes uint8 [>= nBlocks], scales float [nBlocks/256 rounded
// up], offset float [1] and dynmap float [256]. The result has shape dims and
// n elements; dtype is 6 (float) or 15 (bfloat16), gotch's kinds.
void loraft_nf4_dequantize(tensor *out, tensor packed, tensor pairs,
                           tensor absmax, tensor absmax_codes, tensor scales,
                           tensor offset, tensor dynmap, int64_t n,
                           int64_t *dims, int ndims, int dtype) {
  PROTECT(*out = new torch::Tensor(nf4_dequantize(packed, pairs, absmax, absmax_codes, scales, offset, dynmap, n, dims, ndims, dtype));)
}
}
