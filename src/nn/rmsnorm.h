// RMSNorm over the last dimension (Zhang & Sennrich 2019, "Root Mean Square
// Layer Normalization"): no mean subtraction and no bias,
//   out = x * rstd * weight,  rstd = 1 / sqrt(mean(x^2) + eps),  eps = 1e-6
// (as modded-nanogpt and Llama; torch.nn.RMSNorm defaults to the dtype's
// epsilon instead). Forward caches the per-row rstd for backward. Written once
// for T in {float, bf16, fp16} (nn/typed.h): tensors in T, rstd and every sum
// in fp32, parameter gradients fp32.
//
// Backward, with g = dout * weight and xhat = x * rstd (d rstd / dx_j =
// -rstd^3 x_j / C):
//   dx = rstd * (g - xhat * mean(g * xhat)),  dweight += sum over rows of dout * xhat.
//
// Gradient rule for every layer in src/nn: backward ACCUMULATES (+=) into
// parameter gradients and OVERWRITES activation gradients.
#pragma once

#include "nn/typed.h"

namespace chorus::nn {

inline constexpr float kRmsNormEps = 1e-6f;

// out (N, C) = inp * rstd * weight, rows normalised independently (N = B*T).
// rstd (N): saved 1 / sqrt(mean(inp^2) + eps). weight (C), or nullptr for no
// gain (all ones, e.g. modded-nanogpt's parameter-free norm). out must not
// alias inp.
template <typename T>
void rmsnorm_forward(T* out, float* rstd, const T* inp, const Same<T>* weight, int N, int C);

// dinp (N, C) = dresidual + dRMS/dinp (dresidual == nullptr: zeros). Fuses the
// residual-stream add of a pre-norm block; dinp may alias dresidual but not
// dout. dweight (C) += the gain's gradient (with weight == nullptr, that of an
// all-ones gain); dweight == nullptr: not computed. dout (N, C); inp, weight,
// rstd as forward.
template <typename T>
void rmsnorm_backward(T* dinp, float* dweight, const T* dout, const T* inp, const Same<T>* weight,
                      const float* rstd, int N, int C, const Same<T>* dresidual = nullptr);

}  // namespace chorus::nn
