// Linear layer y = x W^T + b with W (OC, C) row-major, the torch.nn.Linear
// layout, so GPT-2 / PyTorch weights load without transposing. Every product
// is one GEMM over all N = B*T rows.
//
// Written once for every storage dtype T in {float, bf16, fp16} (nn/typed.h):
// activations, weights and bias in T, products accumulated in fp32 through
// backend::cpu::gemm_mixed (which picks oneDNN / OpenBLAS sbgemm / fp32 SGEMM
// at run time), outputs rounded once into T; parameter gradients are fp32
// and accumulate across micro-batches in fp32.
//
// Gradient rule for every layer in src/nn: backward ACCUMULATES (+=) into
// parameter gradients and OVERWRITES activation gradients.
#pragma once

#include "core/dtype.h"
#include "nn/typed.h"

#include <cstdint>
#include <vector>

namespace chorus::nn {

// out (N, OC) = inp (N, C) @ weight^T + bias + residual.
// weight (OC, C); bias (OC) or nullptr; residual (N, OC) or nullptr (fuses a
// residual add into the GEMM's accumulate; out may alias residual). out must
// not alias inp.
template <typename T>
void matmul_forward(T* out, const T* inp, const T* weight, const Same<T>* bias, int N, int C, int OC,
                    const Same<T>* residual = nullptr);

// The same product left in fp32: acc (N, OC) = inp @ weight^T + bias + residual
// (not rounded), for layers that reduce the result over ranks before rounding
// (row-parallel). acc may alias residual only when T is float.
template <typename T>
void matmul_forward_f32(float* acc, const T* inp, const T* weight, const Same<T>* bias, int N, int C, int OC,
                        const Same<T>* residual = nullptr);

// dinp (N, C) = dout @ weight (overwritten; nullptr skips it).
// dweight (OC, C) += dout^T @ inp; dbias (OC) += column sums of dout (either
// may be nullptr to skip). dout (N, OC); inp, weight as forward.
template <typename T>
void matmul_backward(Same<T>* dinp, float* dweight, float* dbias, const T* dout, const T* inp, const T* weight, int N,
                     int C, int OC);

// The parameter-gradient half of matmul_backward, plus dinp left in fp32
// (dinp_acc (N, C), overwritten; nullptr skips it), for column-parallel
// layers that all-reduce the input gradient before rounding it.
template <typename T>
void matmul_backward_f32(float* dinp_acc, float* dweight, float* dbias, const T* dout, const T* inp,
                         const T* weight, int N, int C, int OC);

// What a decode step multiplies by (models::Gpt::set_decode_weights; issue 10):
//   fp32  the model's own weights;
//   bf16  weight-only bf16 copies (each weight rounded once, to nearest even):
//         half of fp32's bytes, fp32's exponent range, 8 significant bits;
//   int8  weight-only int8 (below): a quarter of fp32's bytes.
// Decoding a token reads every weight once (memory-bound at batch 1), so
// fewer bytes per weight is faster there; products and sums stay fp32.
//   w8a8  the int8 weights, and each activation row quantised to int8 too:
//         integer products summed exactly (backend::cpu::gemm_rows_w8a8; the
//         CPU's integer dot-product units, AVX-512 VNNI, where present).
enum class DecodeWeights { fp32, bf16, int8, w8a8 };
// "fp32" | "bf16" | "int8" | "w8a8" (what logs and evaluate's JSON record).
const char* decode_weights_name(DecodeWeights w);

// A matrix W (OC, C), row-major as Linear weights are, packed for decoding:
// int8 (and w8a8): W ~= scale[o] * q[o, :], symmetric per output channel,
//   |W - dequant| <= scale / 2 (backend/cpu/gemv.h). Re-quantising a
//   dequantised matrix gives the same codes (max |q| per row is 127) and the
//   scales up to one rounding.
// bf16: h[o, c] = W[o, c] rounded to bf16.
struct PackedWeight {
  DecodeWeights format = DecodeWeights::fp32;  // bf16, int8 or w8a8 once packed
  std::vector<int8_t> q;     // int8, w8a8: (rows, cols) row-major
  std::vector<float> scale;  // int8, w8a8: (rows)
  std::vector<bf16> h;       // bf16: (rows, cols) row-major
  int rows = 0, cols = 0;
  bool empty() const { return rows == 0; }
  // out[c] = the packed row r as fp32 (dequantised codes, or widened bf16).
  void row(int r, float* out) const;
};
PackedWeight pack_weight(const float* W, int rows, int cols, DecodeWeights format);
inline PackedWeight quantize_int8(const float* W, int rows, int cols) {
  return pack_weight(W, rows, cols, DecodeWeights::int8);
}

// out (N, OC) = inp (N, C) @ unpack(w)^T + bias + residual in fp32, OC =
// w.rows, C = w.cols; bias and residual may be nullptr; out may alias
// residual, not inp. One backend::cpu::gemm_rows_int8 / gemm_rows_bf16 /
// gemm_rows_w8a8: every packed row is read once for all N rows (a batch of
// beams decodes together).
void matmul_forward_packed(float* out, const float* inp, const PackedWeight& w, const float* bias, int N,
                           const float* residual = nullptr);

}  // namespace chorus::nn
