// Gradient rule: backward accumulates (+=) into parameter gradients and
// overwrites activation gradients (see layernorm.h).
#include "nn/layernorm.h"

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "nn/typed.h"

namespace chorus::nn {
namespace {

namespace cpu = chorus::backend::cpu;

constexpr size_t kParallelMin = 1 << 14;

// fp32 copies of the (C) gain and bias, made once on the calling thread and
// shared read-only by the parallel loop (the tensors themselves for float).
template <typename T>
void gain_bias_f32(const T* weight, const T* bias, int C, const float** w, const float** b) {
  if constexpr (kIsF32<T>) {
    *w = weight;
    *b = bias;
  } else {
    float* buf = cpu::thread_scratch(cpu::kScratchRowIn2, 2 * static_cast<size_t>(C));
    convert_serial(buf, weight, C);
    if (bias != nullptr) convert_serial(buf + C, bias, C);
    *w = buf;
    *b = buf + C;
  }
}

}  // namespace

template <typename T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* weight, const T* bias, int N,
                       int C) {
  const float *weight32, *bias32;
  gain_bias_f32(weight, bias, C, &weight32, &bias32);
#pragma omp parallel for schedule(static) if (static_cast <size_t>(N) * C > kParallelMin)
  for (int r = 0; r < N; ++r) {
    const float* x = f32_rows(inp + static_cast<size_t>(r) * C, 1, C, C, cpu::thread_scratch(cpu::kScratchRowIn, C)).p;
    T* dst = out + static_cast<size_t>(r) * C;
    float* o = f32_accumulator(dst, C, cpu::kScratchRowOut);
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
    for (int c = 0; c < C; ++c) o[c] = (x[c] - m) * rs * weight32[c] + bias32[c];
    store_rows(dst, C, o, C, 1, C);
    mean[r] = m;
    rstd[r] = rs;
  }
}

template <typename T>
void layernorm_backward(T* dinp, float* dweight, float* dbias, const T* dout, const T* inp, const T* weight,
                        const float* mean, const float* rstd, int N, int C, const Same<T>* dresidual) {
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
      const T* x = inp + static_cast<size_t>(r) * C + c0;
      const T* d = dout + static_cast<size_t>(r) * C + c0;
      const float m = mean[r];
      const float rs = rstd[r];
#pragma omp simd
      for (int c = 0; c < nc; ++c) {
        const float dc = to_f32(d[c]);
        gw[c] += (to_f32(x[c]) - m) * rs * dc;
        gb[c] += dc;
      }
    }
    for (int c = 0; c < nc; ++c) {
      dweight[c0 + c] += gw[c];
      dbias[c0 + c] += gb[c];
    }
  }
  const float *weight32, *unused;
  gain_bias_f32<T>(weight, nullptr, C, &weight32, &unused);
  // Input gradient, row by row (Ba et al.; as llm.c layernorm_backward):
  // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * weight.
#pragma omp parallel for schedule(static) if (parallel)
  for (int r = 0; r < N; ++r) {
    float* in_buf = cpu::thread_scratch(cpu::kScratchRowIn, 3 * static_cast<size_t>(C));
    const float* x = f32_rows(inp + static_cast<size_t>(r) * C, 1, C, C, in_buf).p;
    const float* d = f32_rows(dout + static_cast<size_t>(r) * C, 1, C, C, in_buf + C).p;
    const float* res = dresidual ? f32_rows(dresidual + static_cast<size_t>(r) * C, 1, C, C, in_buf + 2 * C).p
                                 : nullptr;
    T* dst = dinp + static_cast<size_t>(r) * C;
    float* dx = f32_accumulator(dst, C, cpu::kScratchRowOut);
    const float m = mean[r];
    const float rs = rstd[r];
    float g_mean = 0.0f;
    float gx_mean = 0.0f;
#pragma omp simd reduction(+ : g_mean, gx_mean)
    for (int c = 0; c < C; ++c) {
      const float g = d[c] * weight32[c];
      g_mean += g;
      gx_mean += g * (x[c] - m) * rs;
    }
    g_mean /= C;
    gx_mean /= C;
    if (res) {
#pragma omp simd
      for (int c = 0; c < C; ++c) {
        const float xhat = (x[c] - m) * rs;
        dx[c] = res[c] + rs * (d[c] * weight32[c] - g_mean - xhat * gx_mean);
      }
    } else {
#pragma omp simd
      for (int c = 0; c < C; ++c) {
        const float xhat = (x[c] - m) * rs;
        dx[c] = rs * (d[c] * weight32[c] - g_mean - xhat * gx_mean);
      }
    }
    store_rows(dst, C, dx, C, 1, C);
  }
}

#define CHORUS_INSTANTIATE(T)                                                                                    \
  template void layernorm_forward<T>(T*, float*, float*, const T*, const T*, const T*, int, int);               \
  template void layernorm_backward<T>(T*, float*, float*, const T*, const T*, const T*, const float*,         \
                                      const float*, int, int, const T*);
CHORUS_INSTANTIATE(float)
CHORUS_INSTANTIATE(bf16)
CHORUS_INSTANTIATE(fp16)
#undef CHORUS_INSTANTIATE

}  // namespace chorus::nn
