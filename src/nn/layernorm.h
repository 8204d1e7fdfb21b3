// LayerNorm over the last dimension (Ba et al. 2016), eps = 1e-5 and biased
// variance as torch.nn.LayerNorm. Forward caches the per-row mean and
// 1/sqrt(var + eps) for backward.
//
// Gradient rule for every layer in src/nn: backward ACCUMULATES (+=) into
// parameter gradients and OVERWRITES activation gradients.
#pragma once

namespace chorus::nn {

inline constexpr float kLayerNormEps = 1e-5f;

// out (N, C) = (inp - mean) * rstd * weight + bias, rows normalised independently
// (N = B*T). mean, rstd (N): saved statistics. out must not alias inp.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C);

// dinp (N, C) = dresidual + dLN/dinp (dresidual == nullptr: zeros). Fuses the
// residual-stream add of a pre-LN block; dinp may alias dresidual but not dout.
// dweight, dbias (C) += their gradients. dout (N, C); inp, mean, rstd as forward.
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int N, int C,
                        const float* dresidual = nullptr);

}  // namespace chorus::nn
