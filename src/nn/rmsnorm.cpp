// Gradient rule: backward accumulates (+=) into parameter gradients and
// overwrites activation gradients (see rmsnorm.h).
#include "nn/rmsnorm.h"

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "nn/typed.h"

namespace chorus::nn {
namespace {

namespace cpu = chorus::backend::cpu;

constexpr size_t kParallelMin = 1 << 14;

// fp32 copy of the (C) gain, made once on the calling thread and shared
// read-only by the parallel loop: the tensor itself for float, all ones for
// weight == nullptr.
template <typename T>
const float* gain_f32(const T* weight, int C) {
  if constexpr (kIsF32<T>) {
    if (weight != nullptr) return weight;
  }
  float* buf = cpu::thread_scratch(cpu::kScratchRowIn2, static_cast<size_t>(C));
  if (weight == nullptr) {
    std::fill(buf, buf + C, 1.0f);
  } else {
    convert_serial(buf, weight, C);
  }
  return buf;
}

}  // namespace

template <typename T>
void rmsnorm_forward(T* out, float* rstd, const T* inp, const Same<T>* weight, int N, int C) {
  const float* weight32 = gain_f32(weight, C);
#pragma omp parallel for schedule(static) if (static_cast <size_t>(N) * C > kParallelMin)
  for (int r = 0; r < N; ++r) {
    const float* x =
        f32_rows(inp + static_cast<size_t>(r) * C, 1, C, C, cpu::thread_scratch(cpu::kScratchRowIn, C)).p;
    T* dst = out + static_cast<size_t>(r) * C;
    float* o = f32_accumulator(dst, C, cpu::kScratchRowOut);
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int c = 0; c < C; ++c) ss += x[c] * x[c];
    const float rs = 1.0f / std::sqrt(ss / C + kRmsNormEps);
#pragma omp simd
    for (int c = 0; c < C; ++c) o[c] = x[c] * rs * weight32[c];
    store_rows(dst, C, o, C, 1, C);
    rstd[r] = rs;
  }
}

template <typename T>
void rmsnorm_backward(T* dinp, float* dweight, const T* dout, const T* inp, const Same<T>* weight,
                      const float* rstd, int N, int C, const Same<T>* dresidual) {
  const bool parallel = static_cast<size_t>(N) * C > kParallelMin;
  if (dweight != nullptr) {
    // Column blocks, rows summed in order (deterministic, and no two threads
    // touch one cache line of dweight), as layernorm_backward.
    constexpr int kBlock = 64;
    const int n_blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (parallel && n_blocks > 1)
    for (int blk = 0; blk < n_blocks; ++blk) {
      const int c0 = blk * kBlock;
      const int nc = std::min(kBlock, C - c0);
      float gw[kBlock] = {};
      for (int r = 0; r < N; ++r) {
        const T* x = inp + static_cast<size_t>(r) * C + c0;
        const T* d = dout + static_cast<size_t>(r) * C + c0;
        const float rs = rstd[r];
#pragma omp simd
        for (int c = 0; c < nc; ++c) gw[c] += to_f32(x[c]) * rs * to_f32(d[c]);
      }
      for (int c = 0; c < nc; ++c) dweight[c0 + c] += gw[c];
    }
  }
  const float* weight32 = gain_f32(weight, C);
  // dx = rstd * (g - xhat * mean(g * xhat)), g = dout * weight, xhat = x * rstd.
#pragma omp parallel for schedule(static) if (parallel)
  for (int r = 0; r < N; ++r) {
    float* in_buf = cpu::thread_scratch(cpu::kScratchRowIn, 3 * static_cast<size_t>(C));
    const float* x = f32_rows(inp + static_cast<size_t>(r) * C, 1, C, C, in_buf).p;
    const float* d = f32_rows(dout + static_cast<size_t>(r) * C, 1, C, C, in_buf + C).p;
    const float* res =
        dresidual ? f32_rows(dresidual + static_cast<size_t>(r) * C, 1, C, C, in_buf + 2 * C).p : nullptr;
    T* dst = dinp + static_cast<size_t>(r) * C;
    float* dx = f32_accumulator(dst, C, cpu::kScratchRowOut);
    const float rs = rstd[r];
    float gx_mean = 0.0f;
#pragma omp simd reduction(+ : gx_mean)
    for (int c = 0; c < C; ++c) gx_mean += d[c] * weight32[c] * x[c] * rs;
    gx_mean /= C;
    if (res) {
#pragma omp simd
      for (int c = 0; c < C; ++c) dx[c] = res[c] + rs * (d[c] * weight32[c] - x[c] * rs * gx_mean);
    } else {
#pragma omp simd
      for (int c = 0; c < C; ++c) dx[c] = rs * (d[c] * weight32[c] - x[c] * rs * gx_mean);
    }
    store_rows(dst, C, dx, C, 1, C);
  }
}

#define CHORUS_INSTANTIATE(T)                                                                         \
  template void rmsnorm_forward<T>(T*, float*, const T*, const T*, int, int);                         \
  template void rmsnorm_backward<T>(T*, float*, const T*, const T*, const T*, const float*, int, int, \
                                    const T*);
CHORUS_INSTANTIATE(float)
CHORUS_INSTANTIATE(bf16)
CHORUS_INSTANTIATE(fp16)
#undef CHORUS_INSTANTIATE

}  // namespace chorus::nn
