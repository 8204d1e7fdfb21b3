// Gradient rule: backward accumulates (+=) into parameter gradients and
// overwrites activation gradients (see qk_transform.h).
#include "nn/qk_transform.h"

#include <cmath>
#include <cstddef>

#include "core/error.h"
#include "nn/rmsnorm.h"
#include "nn/typed.h"

namespace chorus::nn {
namespace {

namespace cpu = chorus::backend::cpu;

constexpr size_t kParallelMin = 1 << 14;

void check_shape(const char* fn, int B, int Tn, int C, int NH, const QkTransform& tf, int pos0) {
  CHORUS_CHECK(B >= 0 && Tn >= 0 && NH >= 1 && C >= NH && C % NH == 0,
               "%s: C = %d, NH = %d, expected C a positive multiple of NH (B = %d, Tn = %d)", fn, C, NH, B,
               Tn);
  CHORUS_CHECK(!tf.rotary || (C / NH) % 2 == 0, "%s: rotary needs an even head size, got hs = %d", fn,
               C / NH);
  CHORUS_CHECK(!tf.rotary || (tf.rope_theta > 0.0f && pos0 >= 0),
               "%s: rope_theta = %g, pos0 = %d, expected rope_theta > 0 and pos0 >= 0", fn,
               static_cast<double>(tf.rope_theta), pos0);
}

// (Tn, hs) table: row t holds cos(theta_i) at [i] and sin(theta_i) at
// [hs/2 + i], theta_i = (pos0 + t) * rope_theta^(-2i/hs), i < hs/2, computed
// in double and rounded once. In the calling thread's kScratchRowIn2 (the
// parallel loops below use kScratchRowIn / kScratchRowOut only).
const float* rope_table(int Tn, int hs, int pos0, float rope_theta) {
  const int half = hs / 2;
  float* tab = cpu::thread_scratch(cpu::kScratchRowIn2, static_cast<size_t>(Tn) * hs);
#pragma omp parallel for schedule(static) if (static_cast <size_t>(Tn) * half > 4096)
  for (int t = 0; t < Tn; ++t) {
    const double pos = static_cast<double>(pos0) + t;
    for (int i = 0; i < half; ++i) {
      const double inv_freq = std::pow(static_cast<double>(rope_theta), -2.0 * i / hs);
      const double a = pos * inv_freq;
      tab[static_cast<size_t>(t) * hs + i] = static_cast<float>(std::cos(a));
      tab[static_cast<size_t>(t) * hs + half + i] = static_cast<float>(std::sin(a));
    }
  }
  return tab;
}

// x <- R x (inverse = false) or R^T x for one head; cs = the position's table row.
inline void rotate(float* x, const float* cs, int half, bool inverse) {
  const float* c = cs;
  const float* s = cs + half;
  const float sign = inverse ? -1.0f : 1.0f;
#pragma omp simd
  for (int i = 0; i < half; ++i) {
    const float a = x[i], b = x[half + i], si = sign * s[i];
    x[i] = a * c[i] - b * si;
    x[half + i] = a * si + b * c[i];
  }
}

}  // namespace

template <typename T>
void qk_transform_forward(T* qkv, float* rstd, int B, int Tn, int C, int NH, const QkTransform& tf,
                          int pos0) {
  check_shape("qk_transform_forward", B, Tn, C, NH, tf, pos0);
  CHORUS_CHECK(!tf.qk_norm || rstd != nullptr, "qk_transform_forward: qk_norm needs an rstd buffer");
  if (!tf.any()) return;
  const int hs = C / NH, half = hs / 2, n_rows = B * Tn;
  const float* tab = tf.rotary ? rope_table(Tn, hs, pos0, tf.rope_theta) : nullptr;
#pragma omp parallel for schedule(static) if (static_cast <size_t>(n_rows) * 2 * C > kParallelMin)
  for (int r = 0; r < n_rows; ++r) {
    T* row = qkv + static_cast<size_t>(r) * 3 * C;
    float* x = f32_accumulator(row, 2 * static_cast<size_t>(C), cpu::kScratchRowOut);
    if constexpr (!kIsF32<T>) convert_serial(x, row, 2 * static_cast<size_t>(C));
    const float* cs = tab ? tab + static_cast<size_t>(r % Tn) * hs : nullptr;
    for (int j = 0; j < 2 * NH; ++j) {  // q heads, then k heads
      float* h = x + static_cast<size_t>(j) * hs;
      if (tf.qk_norm) {
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int i = 0; i < hs; ++i) ss += h[i] * h[i];
        const float rs = 1.0f / std::sqrt(ss / hs + kRmsNormEps);
#pragma omp simd
        for (int i = 0; i < hs; ++i) h[i] *= rs;
        rstd[static_cast<size_t>(r) * 2 * NH + j] = rs;
      }
      if (cs) rotate(h, cs, half, false);
    }
    store_rows(row, 3 * C, x, 2 * C, 1, 2 * C);
  }
}

template <typename T>
void qk_transform_backward(T* dqkv, const T* qkv, const float* rstd, int B, int Tn, int C, int NH,
                           const QkTransform& tf, int pos0) {
  check_shape("qk_transform_backward", B, Tn, C, NH, tf, pos0);
  CHORUS_CHECK(!tf.qk_norm || (rstd != nullptr && qkv != nullptr),
               "qk_transform_backward: qk_norm needs the transformed qkv and rstd");
  if (!tf.any()) return;
  const int hs = C / NH, half = hs / 2, n_rows = B * Tn;
  const size_t w = 2 * static_cast<size_t>(C);
  const float* tab = tf.rotary ? rope_table(Tn, hs, pos0, tf.rope_theta) : nullptr;
#pragma omp parallel for schedule(static) if (static_cast <size_t>(n_rows) * w > kParallelMin)
  for (int r = 0; r < n_rows; ++r) {
    T* row = dqkv + static_cast<size_t>(r) * 3 * C;
    float* g = f32_accumulator(row, w, cpu::kScratchRowOut);
    if constexpr (!kIsF32<T>) convert_serial(g, row, w);
    const float* z = nullptr;  // the saved transformed q, k (qk_norm only)
    if (tf.qk_norm) {
      float* buf = cpu::thread_scratch(cpu::kScratchRowIn, w);
      z = f32_rows(qkv + static_cast<size_t>(r) * 3 * C, 1, 2 * C, 3 * C, buf).p;
    }
    const float* cs = tab ? tab + static_cast<size_t>(r % Tn) * hs : nullptr;
    for (int j = 0; j < 2 * NH; ++j) {
      float* gh = g + static_cast<size_t>(j) * hs;
      if (tf.qk_norm) {
        // g - z * mean(g z), in the rotated frame (rotations preserve dot products).
        const float* zh = z + static_cast<size_t>(j) * hs;
        float gz = 0.0f;
#pragma omp simd reduction(+ : gz)
        for (int i = 0; i < hs; ++i) gz += gh[i] * zh[i];
        gz /= hs;
#pragma omp simd
        for (int i = 0; i < hs; ++i) gh[i] -= zh[i] * gz;
      }
      if (cs) rotate(gh, cs, half, true);
      if (tf.qk_norm) {
        const float rs = rstd[static_cast<size_t>(r) * 2 * NH + j];
#pragma omp simd
        for (int i = 0; i < hs; ++i) gh[i] *= rs;
      }
    }
    store_rows(row, 3 * C, g, 2 * C, 1, 2 * C);
  }
}

#define CHORUS_INSTANTIATE(T)                                                                                \
  template void qk_transform_forward<T>(T*, float*, int, int, int, int, const QkTransform&, int);            \
  template void qk_transform_backward<T>(T*, const T*, const float*, int, int, int, int, const QkTransform&, \
                                         int);
CHORUS_INSTANTIATE(float)
CHORUS_INSTANTIATE(bf16)
CHORUS_INSTANTIATE(fp16)
#undef CHORUS_INSTANTIATE

}  // namespace chorus::nn
