// Gradient rule: backward accumulates (+=) into parameter gradients and
// overwrites activation gradients (see mlp_activations.h).
#include "nn/mlp_activations.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu/vmath.h"
#include "core/error.h"
#include "nn/typed.h"

namespace chorus::nn {
namespace {

namespace cpu = chorus::backend::cpu;

// Elements per OpenMP chunk (as gelu.cpp): whole vectors, large enough to amortise the fork.
constexpr long kChunk = 1 << 12;
constexpr size_t kParallelMin = 1 << 14;

// V is float or cpu::VecF: one expression for the vector body and the tail.
template <typename V>
inline V sigmoid(V g) {
  return 1.0f / (1.0f + cpu::exp_approx(-g));
}

// Applies f(out, in..., m) to fp32 views of chunks of the n elements, in
// parallel, rounding out once into T. `out` may alias an input: each chunk
// converts its inputs before it writes.
template <typename T, typename F>
void chunked(T* out, const T* a, const T* b, size_t n, F f) {
  const long nn = static_cast<long>(n);
  const long n_chunks = (nn + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n_chunks > 4)
  for (long c = 0; c < n_chunks; ++c) {
    const long o = c * kChunk, m = std::min(kChunk, nn - o);
    float* buf = cpu::thread_scratch(cpu::kScratchRowIn, 2 * kChunk);
    const float* x = f32_rows(a + o, 1, m, m, buf).p;
    const float* y = b ? f32_rows(b + o, 1, m, m, buf + kChunk).p : nullptr;
    float* r = f32_accumulator(out + o, m, cpu::kScratchRowOut);
    f(r, x, y, m);
    store_rows(out + o, m, r, m, 1, m);
  }
}

}  // namespace

template <typename T>
void relu2_forward(T* out, const T* inp, size_t n) {
  chunked<T>(out, inp, nullptr, n, [](float* y, const float* x, const float*, long m) {
#pragma omp simd
    for (long i = 0; i < m; ++i) {
      const float r = std::max(x[i], 0.0f);
      y[i] = r * r;
    }
  });
}

template <typename T>
void relu2_backward(T* dinp, const T* inp, const T* dout, size_t n) {
  chunked<T>(dinp, inp, dout, n, [](float* dx, const float* x, const float* d, long m) {
#pragma omp simd
    for (long i = 0; i < m; ++i) dx[i] = 2.0f * std::max(x[i], 0.0f) * d[i];
  });
}

template <typename T>
void swiglu_forward(T* out, const T* inp, int N, int F) {
#pragma omp parallel for schedule(static) if (static_cast <size_t>(N) * F > kParallelMin)
  for (int r = 0; r < N; ++r) {
    const float* x = f32_rows(inp + static_cast<size_t>(r) * 2 * F, 1, 2 * F, 2 * F,
                              cpu::thread_scratch(cpu::kScratchRowIn, 2 * static_cast<size_t>(F)))
                         .p;
    const float* g = x;
    const float* u = x + F;
    T* dst = out + static_cast<size_t>(r) * F;
    float* o = f32_accumulator(dst, F, cpu::kScratchRowOut);
    int i = 0;
    for (; i + cpu::kLanes <= F; i += cpu::kLanes) {
      const cpu::VecF gv = cpu::load(g + i);
      cpu::store(o + i, gv * sigmoid(gv) * cpu::load(u + i));
    }
    for (; i < F; ++i) o[i] = g[i] * sigmoid(g[i]) * u[i];
    store_rows(dst, F, o, F, 1, F);
  }
}

template <typename T>
void swiglu_backward(T* dinp, const T* inp, const T* dout, int N, int F) {
#pragma omp parallel for schedule(static) if (static_cast <size_t>(N) * F > kParallelMin)
  for (int r = 0; r < N; ++r) {
    float* buf = cpu::thread_scratch(cpu::kScratchRowIn, 3 * static_cast<size_t>(F));
    const float* x = f32_rows(inp + static_cast<size_t>(r) * 2 * F, 1, 2 * F, 2 * F, buf).p;
    const float* d = f32_rows(dout + static_cast<size_t>(r) * F, 1, F, F, buf + 2 * F).p;
    const float* g = x;
    const float* u = x + F;
    T* dst = dinp + static_cast<size_t>(r) * 2 * F;
    float* dx = f32_accumulator(dst, 2 * static_cast<size_t>(F), cpu::kScratchRowOut);
    float* dg = dx;
    float* du = dx + F;
    auto step = [](auto gv, auto uv, auto dv, auto* dgv, auto* duv) {
      const auto s = sigmoid(gv);
      *dgv = dv * uv * s * (1.0f + gv * (1.0f - s));  // silu'(g) = s (1 + g (1 - s))
      *duv = dv * gv * s;
    };
    int i = 0;
    for (; i + cpu::kLanes <= F; i += cpu::kLanes) {
      cpu::VecF a, b;
      step(cpu::load(g + i), cpu::load(u + i), cpu::load(d + i), &a, &b);
      cpu::store(dg + i, a);
      cpu::store(du + i, b);
    }
    for (; i < F; ++i) step(g[i], u[i], d[i], dg + i, du + i);
    store_rows(dst, 2 * F, dx, 2 * F, 1, 2 * F);
  }
}

template <typename T>
void softcap_forward(T* x, size_t n, float cap) {
  CHORUS_CHECK(cap > 0.0f, "softcap_forward: cap = %g, expected > 0", static_cast<double>(cap));
  const float inv = 1.0f / cap;
  chunked<T>(x, x, nullptr, n, [cap, inv](float* y, const float* v, const float*, long m) {
    for (long i = 0; i < m; ++i) y[i] = cap * std::tanh(v[i] * inv);
  });
}

template <typename T>
void softcap_backward(T* dx, const T* y, size_t n, float cap) {
  CHORUS_CHECK(cap > 0.0f, "softcap_backward: cap = %g, expected > 0", static_cast<double>(cap));
  const float inv = 1.0f / cap;
  chunked<T>(dx, dx, y, n, [inv](float* out, const float* d, const float* yv, long m) {
#pragma omp simd
    for (long i = 0; i < m; ++i) {
      // |y| <= cap in exact arithmetic; a y rounded into T can exceed a cap
      // that T cannot represent, and the slope must not turn negative there.
      const float t = yv[i] * inv;
      out[i] = d[i] * std::max(1.0f - t * t, 0.0f);
    }
  });
}

#define CHORUS_INSTANTIATE(T)                                         \
  template void relu2_forward<T>(T*, const T*, size_t);               \
  template void relu2_backward<T>(T*, const T*, const T*, size_t);    \
  template void swiglu_forward<T>(T*, const T*, int, int);            \
  template void swiglu_backward<T>(T*, const T*, const T*, int, int); \
  template void softcap_forward<T>(T*, size_t, float);                \
  template void softcap_backward<T>(T*, const T*, size_t, float);
CHORUS_INSTANTIATE(float)
CHORUS_INSTANTIATE(bf16)
CHORUS_INSTANTIATE(fp16)
#undef CHORUS_INSTANTIATE

}  // namespace chorus::nn
