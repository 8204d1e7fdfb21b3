// Gradient rule: backward accumulates (+=) into parameter gradients and
// overwrites activation gradients (see layernorm.h).
#include "nn/layernorm.h"

#include <algorithm>
#include <cmath>
#include <cstddef>

namespace chorus::nn {
namespace {
constexpr size_t kParallelMin = 1 << 14;
}

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C) {
#pragma omp parallel for schedule(static) if (static_cast <size_t>(N) * C > kParallelMin)
  for (int r = 0; r < N; ++r) {
    const float* x = inp + static_cast<size_t>(r) * C;
    float* o = out + static_cast<size_t>(r) * C;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < C; ++c) s += x[c];
    const float m = s / C;
    float v = 0.0f;  // two-pass variance: no cancellation
#pragma omp simd reduction(+ : v)
    for (int c = 0; c < C; ++c) {
      const float d = x[c] - m;
      v += d * d;
    }
    const float rs = 1.0f / std::sqrt(v / C + kLayerNormEps);
#pragma omp simd
    for (int c = 0; c < C; ++c) o[c] = (x[c] - m) * rs * weight[c] + bias[c];
    mean[r] = m;
    rstd[r] = rs;
  }
}

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int N, int C,
                        const float* dresidual) {
  const bool parallel = static_cast<size_t>(N) * C > kParallelMin;
  // Parameter gradients: column blocks, rows summed in order (deterministic,
  // and no two threads touch one cache line of dweight / dbias).
  constexpr int kBlock = 64;
  const int n_blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (parallel && n_blocks > 1)
  for (int blk = 0; blk < n_blocks; ++blk) {
    const int c0 = blk * kBlock;
    const int nc = std::min(kBlock, C - c0);
    float gw[kBlock] = {};
    float gb[kBlock] = {};
    for (int r = 0; r < N; ++r) {
      const float* x = inp + static_cast<size_t>(r) * C + c0;
      const float* d = dout + static_cast<size_t>(r) * C + c0;
      const float m = mean[r];
      const float rs = rstd[r];
#pragma omp simd
      for (int c = 0; c < nc; ++c) {
        gw[c] += (x[c] - m) * rs * d[c];
        gb[c] += d[c];
      }
    }
    for (int c = 0; c < nc; ++c) {
      dweight[c0 + c] += gw[c];
      dbias[c0 + c] += gb[c];
    }
  }
  // Input gradient, row by row (Ba et al.; as llm.c layernorm_backward):
  // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * weight.
#pragma omp parallel for schedule(static) if (parallel)
  for (int r = 0; r < N; ++r) {
    const float* x = inp + static_cast<size_t>(r) * C;
    const float* d = dout + static_cast<size_t>(r) * C;
    float* dx = dinp + static_cast<size_t>(r) * C;
    const float* res = dresidual ? dresidual + static_cast<size_t>(r) * C : nullptr;
    const float m = mean[r];
    const float rs = rstd[r];
    float g_mean = 0.0f;
    float gx_mean = 0.0f;
#pragma omp simd reduction(+ : g_mean, gx_mean)
    for (int c = 0; c < C; ++c) {
      const float g = d[c] * weight[c];
      g_mean += g;
      gx_mean += g * (x[c] - m) * rs;
    }
    g_mean /= C;
    gx_mean /= C;
    if (res) {
#pragma omp simd
      for (int c = 0; c < C; ++c) {
        const float xhat = (x[c] - m) * rs;
        dx[c] = res[c] + rs * (d[c] * weight[c] - g_mean - xhat * gx_mean);
      }
    } else {
#pragma omp simd
      for (int c = 0; c < C; ++c) {
        const float xhat = (x[c] - m) * rs;
        dx[c] = rs * (d[c] * weight[c] - g_mean - xhat * gx_mean);
      }
    }
  }
}

}  // namespace chorus::nn
