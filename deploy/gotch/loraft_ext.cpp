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

bool sized(tensor t, at::ScalarType type, int64_t min_numel) {
  return t != nullptr && t->scalar_type() == type && t->numel() >= min_numel;
}

// nf4_dequantize_ops is nf4_dequantize by ATen tensor ops, on whatever
// device the tensors are: the same float operations in the same order (the
// absmax as dynmap[code] * scale, then + offset; each element as its
// codebook value * absmax), so its float result equals the fused loop's bit
// for bit, and its bfloat16 one rounds that alike. Run from here rather
// than op by op from Go, a weight costs one cgo call instead of about
// fifteen gotch calls; on a GPU each op is still one kernel launch.
torch::Tensor nf4_dequantize_ops(tensor packed, tensor pairs, tensor absmax,
                                 tensor absmax_codes, tensor scales, tensor offset,
                                 tensor dynmap, int64_t n, const std::vector<int64_t> &shape,
                                 bool bf16) {
  const int64_t n_blocks = (n + 63) / 64;
  check(sized(packed, at::kByte, n_blocks * 32), "packed codes must be uint8 [nBlocks*32]");
  check(sized(pairs, at::kLong, 256), "pairs must be int64 [256]");
  torch::Tensor a;
  if (absmax_codes != nullptr) {
    check(sized(absmax_codes, at::kByte, n_blocks) && absmax_codes->numel() % 256 == 0,
          "absmax codes must be uint8 [256 * nScales >= nBlocks]");
    check(sized(scales, at::kFloat, 1) && scales->numel() == absmax_codes->numel() / 256, "absmax scales must be float [nScales]");
    check(sized(dynmap, at::kFloat, 256), "dynamic map must be float [256]");
    check(sized(offset, at::kFloat, 1), "absmax offset must be a float");
    a = dynmap->index_select(0, absmax_codes->to(at::kLong))
            .view({-1, 256})
            .mul(scales->reshape({-1, 1}))
            .add(offset->reshape({1}))
            .view({-1})
            .narrow(0, 0, n_blocks)
            .view({n_blocks, 1});
  } else {
    check(sized(absmax, at::kFloat, n_blocks), "absmax must be float [nBlocks]");
    a = absmax->reshape({-1}).narrow(0, 0, n_blocks).view({n_blocks, 1});
  }
  // Each packed byte selects its pair of codebook values (one int64),
  // viewed as the two float32 elements in memory order.
  torch::Tensor vals = pairs->index_select(0, packed->reshape({-1}).narrow(0, 0, n_blocks * 32).to(at::kInt))
                           .view(at::kFloat)
                           .view({n_blocks, 64})
                           .mul(a);
  if (n != n_blocks * 64) vals = vals.view({-1}).narrow(0, 0, n);
  if (bf16) vals = vals.to(at::kBFloat16);
  torch::Tensor result = vals.reshape(shape);
  return result.is_contiguous() ? result : result.contiguous();
}

torch::Tensor nf4_dequantize(tensor packed, tensor pairs, tensor absmax,
                             tensor absmax_codes, tensor scales, tensor offset,
                             tensor dynmap, int64_t n, int64_t *dims,
                             int ndims, int dtype, bool fused) {
  const bool bf16 = dtype == 15;
  check(bf16 || dtype == 6, "dtype must be float or bfloat16");
  check(n > 0, "no elements");
  check(ndims >= 0 && (ndims == 0 || dims != nullptr), "bad shape");
  std::vector<int64_t> shape(dims, dims + ndims);
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  check(numel == n, "shape does not hold n elements");
  if (!fused) return nf4_dequantize_ops(packed, pairs, absmax, absmax_codes, scales, offset, dynmap, n, shape, bf16);
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
  torch::Tensor result = at::empty(shape, at::TensorOptions().dtype(bf16 ? at::kBFloat16 : at::kFloat));
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

// nf4_state is what an NF4 weight's dequantization reads, kept as tensor
// handles (reference counted) in a linear's autograd context so that
// backward can rebuild the weight; an absent tensor is an undefined one.
const char *const nf4_state_names[] = {"packed", "pairs", "absmax", "absmax_codes", "scales", "offset", "dynmap"};

torch::Tensor *defined_or_null(torch::Tensor &t) { return t.defined() ? &t : nullptr; }

// dequantize_saved rebuilds the weight from a context's saved state in dtype.
torch::Tensor dequantize_saved(torch::autograd::AutogradContext *ctx, at::ScalarType dtype) {
  torch::Tensor t[7];
  for (int i = 0; i < 7; ++i) t[i] = ctx->saved_data[nf4_state_names[i]].toTensor();
  std::vector<int64_t> shape = ctx->saved_data["shape"].toIntVector();
  return nf4_dequantize(defined_or_null(t[0]), defined_or_null(t[1]), defined_or_null(t[2]), defined_or_null(t[3]),
                        defined_or_null(t[4]), defined_or_null(t[5]), defined_or_null(t[6]),
                        ctx->saved_data["n"].toInt(), shape.data(), static_cast<int>(shape.size()),
                        dtype == at::kBFloat16 ? 15 : 6, ctx->saved_data["fused"].toBool());
}

// NF4Linear is a frozen NF4 Linear layer, x·Wᵀ + bias, as bitsandbytes'
// MatMul4Bit does it: forward dequantizes W in x's dtype and drops it after
// the product; backward dequantizes it again for the input gradient dY·W.
// Autograd keeps only the packed weight between the two, not the dense W a
// plain linear would keep (342 MB in fp32 for bert-base's 73 frozen
// Linears). The weight and bias are frozen: they get no gradient.
struct NF4Linear : public torch::autograd::Function<NF4Linear> {
  // state holds the seven tensors of nf4_state_names; being no Tensor
  // argument, it is not an autograd input, and neither are n, shape and
  // fused. bias is one (optional), but frozen.
  static torch::Tensor forward(torch::autograd::AutogradContext *ctx, torch::Tensor x, c10::optional<torch::Tensor> bias,
                               std::vector<torch::Tensor> state, int64_t n, std::vector<int64_t> shape, bool fused) {
    for (int i = 0; i < 7; ++i) ctx->saved_data[nf4_state_names[i]] = state[i];
    ctx->saved_data["n"] = n;
    ctx->saved_data["shape"] = shape;
    ctx->saved_data["fused"] = fused;
    torch::Tensor w = dequantize_saved(ctx, x.scalar_type());
    // The same ops as graph.Linear's, so the result equals the dense path's.
    return bias.has_value() ? at::linear(x, w, *bias) : at::matmul(x, w.t());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list grads) {
    torch::Tensor dx = grads[0].matmul(dequantize_saved(ctx, grads[0].scalar_type()));
    // One gradient per forward argument: only x has one.
    return {dx, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

torch::Tensor nf4_linear(tensor x, tensor bias, tensor packed, tensor pairs, tensor absmax,
                         tensor absmax_codes, tensor scales, tensor offset, tensor dynmap,
                         int64_t n, int64_t *dims, int ndims, bool fused) {
  check(x != nullptr, "linear: no input");
  check(ndims > 0 && dims != nullptr, "linear: bad weight shape");
  std::vector<torch::Tensor> state;
  for (tensor t : {packed, pairs, absmax, absmax_codes, scales, offset, dynmap}) state.push_back(t ? *t : torch::Tensor());
  c10::optional<torch::Tensor> b;
  if (bias != nullptr) b = *bias;
  return NF4Linear::apply(*x, b, state, n, std::vector<int64_t>(dims, dims + ndims), fused);
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

// loraft_nf4_dequantize is trainer/nf4's Weight.Dequantize. With fused (CPU
// tensors only) it is one loop: decode each packed byte's two codes through the float32
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
//
// Without fused it runs the same arithmetic as ATen tensor ops on the
// tensors' device (nf4_dequantize_ops): how a GPU dequantizes, as the shim
// has no CUDA kernel.
void loraft_nf4_dequantize(tensor *out, tensor packed, tensor pairs,
                           tensor absmax, tensor absmax_codes, tensor scales,
                           tensor offset, tensor dynmap, int64_t n,
                           int64_t *dims, int ndims, int dtype, int fused) {
  PROTECT(*out = new torch::Tensor(nf4_dequantize(packed, pairs, absmax, absmax_codes, scales, offset, dynmap, n, dims, ndims, dtype, fused != 0));)
}

// loraft_nf4_linear is trainer/nf4's Weight.Linear: x·Wᵀ (+ bias when not
// null) for the NF4 weight described as loraft_nf4_dequantize's inputs,
// dequantized in x's dtype (float or bfloat16) by the fused loop (fused,
// CPU) or the tensor ops, and again in backward instead of being kept
// (NF4Linear). Gradients flow to x only.
void loraft_nf4_linear(tensor *out, tensor x, tensor bias, tensor packed, tensor pairs,
                       tensor absmax, tensor absmax_codes, tensor scales, tensor offset,
                       tensor dynmap, int64_t n, int64_t *dims, int ndims, int fused) {
  PROTECT(*out = new torch::Tensor(nf4_linear(x, bias, packed, pairs, absmax, absmax_codes, scales, offset, dynmap, n, dims, ndims, fused != 0));)
}
}
