// Gradient rule: backward accumulates (+=) into parameter gradients and
// overwrites activation gradients (see gelu.h).
#include "nn/gelu.h"

#include "backend/cpu/vmath.h"

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

}  // namespace

void gelu_forward(float* out, const float* inp, size_t n) {
  const long nn = static_cast<long>(n);
  const long n_chunks = (nn + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n_chunks > 4)
  for (long c = 0; c < n_chunks; ++c) {
    const long end = c * kChunk + kChunk < nn ? c * kChunk + kChunk : nn;
    long i = c * kChunk;
    for (; i + cpu::kLanes <= end; i += cpu::kLanes) cpu::store(out + i, gelu(cpu::load(inp + i)));
    for (; i < end; ++i) out[i] = gelu(inp[i]);
  }
}

void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) {
  const long nn = static_cast<long>(n);
  const long n_chunks = (nn + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n_chunks > 4)
  for (long c = 0; c < n_chunks; ++c) {
    const long end = c * kChunk + kChunk < nn ? c * kChunk + kChunk : nn;
    long i = c * kChunk;
    for (; i + cpu::kLanes <= end; i += cpu::kLanes)
      cpu::store(dinp + i, gelu_grad(cpu::load(inp + i), cpu::load(dout + i)));
    for (; i < end; ++i) dinp[i] = gelu_grad(inp[i], dout[i]);
  }
}

}  // namespace chorus::nn
