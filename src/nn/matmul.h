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

}  // namespace chorus::nn
