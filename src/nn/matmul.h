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

// Weight-only int8 for inference (issue 10; backend/cpu/gemv.h): W (OC, C) ~=
// scale[o] * q[o, :], symmetric per output channel, |W - dequant| <= scale / 2.
// Decoding a token reads every weight once (memory-bound); codes are a quarter
// of fp32's bytes. Re-quantising a dequantised matrix gives the same codes
// (max |q| per row is 127) and the scales up to one rounding.
struct Int8Weight {
  std::vector<int8_t> q;     // (rows, cols) row-major
  std::vector<float> scale;  // (rows)
  int rows = 0, cols = 0;
  bool empty() const { return rows == 0; }
};
Int8Weight quantize_int8(const float* W, int rows, int cols);

// out (N, OC) = inp (N, C) @ dequant(w)^T + bias + residual in fp32, OC =
// w.rows, C = w.cols; bias and residual may be nullptr; out may alias
// residual, not inp. One backend::cpu::gemm_rows_int8: every code row is read
// and widened once for all N rows (a batch of beams decodes together).
void matmul_forward_int8(float* out, const float* inp, const Int8Weight& w, const float* bias, int N,
                         const float* residual = nullptr);

}  // namespace chorus::nn
