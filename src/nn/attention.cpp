// Gradient rule: backward accumulates (+=) into parameter gradients and
// overwrites activation gradients (see attention.h).
#include "nn/attention.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu/ops.h"
#include "backend/cpu/vmath.h"
#include "nn/typed.h"

namespace chorus::nn {

namespace cpu = chorus::backend::cpu;

namespace {

// In-place softmax of p[0, n) with max subtraction; p[n, n_zero) set to 0.
inline void softmax_row(float* p, int n, int n_zero) {
  const float mx = cpu::max_of(p, n);
  const float inv = 1.0f / cpu::exp_store_sum(p, p, n, mx);
#pragma omp simd
  for (int u = 0; u < n; ++u) p[u] *= inv;
  for (int u = n; u < n_zero; ++u) p[u] = 0.0f;
}

}  // namespace

template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int B, int Tn, int C, int NH) {
  const int hs = C / NH;
  const int ld = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const size_t TT = static_cast<size_t>(Tn) * Tn, Ths = static_cast<size_t>(Tn) * hs;
  cpu::SerialBlasScope serial_blas;  // one single-threaded GEMM per (b, h) task
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const T* q_t = qkv + static_cast<size_t>(b) * Tn * ld + h * hs;
      float* in = cpu::thread_scratch(cpu::kScratchAttnQKV, 3 * Ths);
      const F32View q = f32_rows(q_t, Tn, hs, ld, in);
      const F32View k = f32_rows(q_t + C, Tn, hs, ld, in + Ths);
      const F32View v = f32_rows(q_t + 2 * C, Tn, hs, ld, in + 2 * Ths);
      T* p_t = att + (static_cast<size_t>(b) * NH + h) * TT;
      float* p = f32_accumulator(p_t, TT, cpu::kScratchAttnP);  // ld Tn
      T* y_t = out + static_cast<size_t>(b) * Tn * C + h * hs;
      float* y = kIsF32<T> ? reinterpret_cast<float*>(y_t) : cpu::thread_scratch(cpu::kScratchAttnGrad, Ths);
      const int ldy = kIsF32<T> ? C : hs;
      for (int i0 = 0; i0 < Tn; i0 += kAttnBlock) {
        const int i1 = std::min(Tn, i0 + kAttnBlock);
        float* pb = p + static_cast<size_t>(i0) * Tn;
        // scores[i0:i1, 0:i1] = scale * q[i0:i1] @ k[0:i1]^T
        cpu::gemm(false, true, i1 - i0, i1, hs, scale, q.p + static_cast<size_t>(i0) * q.ld, q.ld, k.p, k.ld, 0.0f,
                  pb, Tn);
        for (int t = i0; t < i1; ++t) {
          float* row = p + static_cast<size_t>(t) * Tn;
          softmax_row(row, t + 1, i1);
          if constexpr (!kIsF32<T>) {
            for (int u = 0; u <= t; ++u) row[u] = round_to<T>(row[u]);  // what backward will read
            convert_serial(p_t + static_cast<size_t>(t) * Tn, row, i1);
          }
        }
        // y[i0:i1] = P[i0:i1, 0:i1] @ v[0:i1]
        cpu::gemm(false, false, i1 - i0, hs, i1, 1.0f, pb, Tn, v.p, v.ld, 0.0f, y + static_cast<size_t>(i0) * ldy,
                  ldy);
      }
      store_rows(y_t, C, y, ldy, Tn, hs);
    }
  }
}

template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* att, int B, int Tn, int C, int NH) {
  const int hs = C / NH;
  const int ld = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const size_t TT = static_cast<size_t>(Tn) * Tn, Ths = static_cast<size_t>(Tn) * hs;
  cpu::SerialBlasScope serial_blas;  // one single-threaded GEMM per (b, h) task
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const size_t qkv_off = static_cast<size_t>(b) * Tn * ld + h * hs;
      float* in = cpu::thread_scratch(cpu::kScratchAttnQKV, 4 * Ths);
      const F32View q = f32_rows(qkv + qkv_off, Tn, hs, ld, in);
      const F32View k = f32_rows(qkv + qkv_off + C, Tn, hs, ld, in + Ths);
      const F32View v = f32_rows(qkv + qkv_off + 2 * C, Tn, hs, ld, in + 2 * Ths);
      const F32View dy = f32_rows(dout + static_cast<size_t>(b) * Tn * C + h * hs, Tn, hs, C, in + 3 * Ths);
      T* dq_t = dqkv + qkv_off;
      float* grad = cpu::thread_scratch(cpu::kScratchAttnGrad, 3 * Ths);
      float* dq = kIsF32<T> ? reinterpret_cast<float*>(dq_t) : grad;
      float* dk = kIsF32<T> ? reinterpret_cast<float*>(dq_t + C) : grad + Ths;
      float* dv = kIsF32<T> ? reinterpret_cast<float*>(dq_t + 2 * C) : grad + 2 * Ths;
      const int ldg = kIsF32<T> ? ld : hs;
      const T* p_t = att + (static_cast<size_t>(b) * NH + h) * TT;
      const float* p;
      if constexpr (kIsF32<T>) {
        p = p_t;
      } else {  // each row's block-wide valid part [0, end of its row block)
        float* p32 = cpu::thread_scratch(cpu::kScratchAttnP, TT);
        for (int t = 0; t < Tn; ++t)
          convert_serial(p32 + static_cast<size_t>(t) * Tn, p_t + static_cast<size_t>(t) * Tn,
                         std::min(Tn, (t / kAttnBlock + 1) * kAttnBlock));
        p = p32;
      }
      float* dp = cpu::thread_scratch(cpu::kScratchAttnDS, TT);

      for (int i0 = 0; i0 < Tn; i0 += kAttnBlock) {
        const int i1 = std::min(Tn, i0 + kAttnBlock);
        // dP[i0:i1, 0:i1] = dy[i0:i1] @ v[0:i1]^T
        cpu::gemm(false, true, i1 - i0, i1, hs, 1.0f, dy.p + static_cast<size_t>(i0) * dy.ld, dy.ld, v.p, v.ld, 0.0f,
                  dp + static_cast<size_t>(i0) * Tn, Tn);
        // softmax backward in place: dS = P * (dP - sum(P * dP)) * scale
        for (int t = i0; t < i1; ++t) {
          const float* pr = p + static_cast<size_t>(t) * Tn;
          float* g = dp + static_cast<size_t>(t) * Tn;
          const int n = t + 1;
          const float s = cpu::dot(pr, g, n);
          const cpu::VecF vs = cpu::splat(s);
          int u = 0;
          for (; u + cpu::kLanes <= n; u += cpu::kLanes)
            cpu::store(g + u, cpu::load(pr + u) * (cpu::load(g + u) - vs) * scale);
          for (; u < n; ++u) g[u] = pr[u] * (g[u] - s) * scale;
          for (u = n; u < i1; ++u) g[u] = 0.0f;
        }
        // dq[i0:i1] = dS[i0:i1, 0:i1] @ k[0:i1]
        cpu::gemm(false, false, i1 - i0, hs, i1, 1.0f, dp + static_cast<size_t>(i0) * Tn, Tn, k.p, k.ld, 0.0f,
                  dq + static_cast<size_t>(i0) * ldg, ldg);
      }
      // Key/value gradients by column block j: only query rows t >= j0 see keys
      // in [j0, j1). dv[j] = P[j0:T, j]^T @ dy[j0:T], dk[j] = dS[j0:T, j]^T @ q[j0:T].
      for (int j0 = 0; j0 < Tn; j0 += kAttnBlock) {
        const int j1 = std::min(Tn, j0 + kAttnBlock);
        const size_t diag = static_cast<size_t>(j0) * Tn + j0;
        cpu::gemm(true, false, j1 - j0, hs, Tn - j0, 1.0f, p + diag, Tn, dy.p + static_cast<size_t>(j0) * dy.ld,
                  dy.ld, 0.0f, dv + static_cast<size_t>(j0) * ldg, ldg);
        cpu::gemm(true, false, j1 - j0, hs, Tn - j0, 1.0f, dp + diag, Tn, q.p + static_cast<size_t>(j0) * q.ld,
                  q.ld, 0.0f, dk + static_cast<size_t>(j0) * ldg, ldg);
      }
      if constexpr (!kIsF32<T>) {
        store_rows(dq_t, ld, dq, hs, Tn, hs);
        store_rows(dq_t + C, ld, dk, hs, Tn, hs);
        store_rows(dq_t + 2 * C, ld, dv, hs, Tn, hs);
      }
    }
  }
}

#define CHORUS_INSTANTIATE(T)                                                                  \
  template void attention_forward<T>(T*, T*, const T*, int, int, int, int);                    \
  template void attention_backward<T>(T*, const T*, const T*, const T*, int, int, int, int);
CHORUS_INSTANTIATE(float)
CHORUS_INSTANTIATE(bf16)
CHORUS_INSTANTIATE(fp16)
#undef CHORUS_INSTANTIATE

void attention_decode(float* out, float* scores, const float* q, size_t q_stride, const float* k_cache,
                      const float* v_cache, size_t cache_stride, int B, int n_ctx, int C, int NH) {
  const int hs = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  cpu::SerialBlasScope serial_blas;
#pragma omp parallel for collapse(2) \
    schedule(static) if (static_cast <size_t>(B) * NH * n_ctx * hs > (1u << 15))
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const float* qh = q + b * q_stride + h * hs;
      const float* kh = k_cache + b * cache_stride + h * hs;
      const float* vh = v_cache + b * cache_stride + h * hs;
      float* s = scores + (static_cast<size_t>(b) * NH + h) * n_ctx;
      // s (1, n_ctx) = scale * q (1, hs) @ k^T; y (1, hs) = p (1, n_ctx) @ v
      cpu::gemm(false, true, 1, n_ctx, hs, scale, qh, hs, kh, C, 0.0f, s, n_ctx);
      softmax_row(s, n_ctx, n_ctx);
      cpu::gemm(false, false, 1, hs, n_ctx, 1.0f, s, n_ctx, vh, C, 0.0f,
                out + static_cast<size_t>(b) * C + h * hs, C);
    }
  }
}

}  // namespace chorus::nn
