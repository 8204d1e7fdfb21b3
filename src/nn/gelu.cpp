// Gradient rule: backward accumulates (+=) into parameter gradients and
// overwrites activation gradients (see gelu.h).
#include "nn/gelu.h"

#include <algorithm>

#include "backend/cpu/vmath.h"
#include "nn/typed.h"

namespace chorus::nn {
namespace {

namespace cpu = chorus::backend::cpu;

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;
// Elements per OpenMP chunk: whole vectors, and large enough to amortise the fork.
constexpr long kChunk = 1 << 12;

// T is float or cpu::VecF: the same expressions serve the vector body and the tail.
template <typename T>
inline T gelu(T x) {
  const T u = kSqrt2OverPi * (x + kCubic * x * x * x);
  return x / (1.0f + cpu::exp_approx(-2.0f * u));  // x * sigmoid(2u)
}

template <typename T>
inline T gelu_grad(T x, T dout) {
  const T u = kSqrt2OverPi * (x + kCubic * x * x * x);
  const T s = 1.0f / (1.0f + cpu::exp_approx(-2.0f * u));  // 0.5 (1 + tanh u)
  const T du = kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
  // d/dx [x s(2u)] = s + x * 2 s (1 - s) * du
  return (s + 2.0f * x * s * (1.0f - s) * du) * dout;
}

// The vector body and scalar tail over fp32 values [0, m).
inline void gelu_f32(float* out, const float* inp, long m) {
  long i = 0;
  for (; i + cpu::kLanes <= m; i += cpu::kLanes) cpu::store(out + i, gelu(cpu::load(inp + i)));
  for (; i < m; ++i) out[i] = gelu(inp[i]);
}

inline void gelu_grad_f32(float* dinp, const float* inp, const float* dout, long m) {
  long i = 0;
  for (; i + cpu::kLanes <= m; i += cpu::kLanes)
    cpu::store(dinp + i, gelu_grad(cpu::load(inp + i), cpu::load(dout + i)));
  for (; i < m; ++i) dinp[i] = gelu_grad(inp[i], dout[i]);
}

}  // namespace

template <typename T>
void gelu_forward(T* out, const T* inp, size_t n) {
  const long nn = static_cast<long>(n);
  const long n_chunks = (nn + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n_chunks > 4)
  for (long c = 0; c < n_chunks; ++c) {
    const long b = c * kChunk, m = std::min(kChunk, nn - b);
    const float* x = f32_rows(inp + b, 1, m, m, cpu::thread_scratch(cpu::kScratchRowIn, kChunk)).p;
    float* y = f32_accumulator(out + b, m, cpu::kScratchRowOut);
    gelu_f32(y, x, m);
    store_rows(out + b, m, y, m, 1, m);
  }
}

template <typename T>
void gelu_backward(T* dinp, const T* inp, const T* dout, size_t n) {
  const long nn = static_cast<long>(n);
  const long n_chunks = (nn + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n_chunks > 4)
  for (long c = 0; c < n_chunks; ++c) {
    const long b = c * kChunk, m = std::min(kChunk, nn - b);
    float* buf = cpu::thread_scratch(cpu::kScratchRowIn, 2 * kChunk);
    const float* x = f32_rows(inp + b, 1, m, m, buf).p;
    const float* d = f32_rows(dout + b, 1, m, m, buf + kChunk).p;
    float* g = f32_accumulator(dinp + b, m, cpu::kScratchRowOut);
    gelu_grad_f32(g, x, d, m);
    store_rows(dinp + b, m, g, m, 1, m);
  }
}

#define CHORUS_INSTANTIATE(T)                                     \
  template void gelu_forward<T>(T*, const T*, size_t);            \
  template void gelu_backward<T>(T*, const T*, const T*, size_t);
CHORUS_INSTANTIATE(float)
CHORUS_INSTANTIATE(bf16)
CHORUS_INSTANTIATE(fp16)
#undef CHORUS_INSTANTIATE

}  // namespace chorus::nn
