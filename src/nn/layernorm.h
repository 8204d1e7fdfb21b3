// LayerNorm over the last dimension (Ba et al. 2016), eps = 1e-5 and biased
// variance as torch.nn.LayerNorm. Forward caches the per-row mean and
// 1/sqrt(var + eps) for backward. Written once for T in {float, bf16, fp16}
// (nn/typed.h): tensors in T, statistics and every sum in fp32, parameter
// gradients fp32.
//
// Gradient rule for every layer in src/nn: backward ACCUMULATES (+=) into
// parameter gradients and OVERWRITES activation gradients.
#pragma once

#include "nn/typed.h"

namespace chorus::nn {

inline constexpr float kLayerNormEps = 1e-5f;

// out (N, C) = (inp - mean) * rstd * weight + bias, rows normalised independently
// (N = B*T). mean, rstd (N): saved statistics. out must not alias inp.
template <typename T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* weight, const T* bias, int N,
                       int C);

// dinp (N, C) = dresidual + dLN/dinp (dresidual == nullptr: zeros). Fuses the
// residual-stream add of a pre-LN block; dinp may alias dresidual but not dout.
// dweight, dbias (C) += their gradients. dout (N, C); inp, mean, rstd as forward.
template <typename T>
void layernorm_backward(T* dinp, float* dweight, float* dbias, const T* dout, const T* inp, const T* weight,
                        const float* mean, const float* rstd, int N, int C, const Same<T>* dresidual = nullptr);

}  // namespace chorus::nn
