// Gradient rule: backward accumulates (+=) into parameter gradients and
// overwrites activation gradients (see attention.h).
#include "nn/attention.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu/ops.h"
#include "backend/cpu/vmath.h"

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

void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) {
  const int hs = C / NH;
  const int ld = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  cpu::SerialBlasScope serial_blas;  // one single-threaded GEMM per (b, h) task
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const float* q = qkv + static_cast<size_t>(b) * T * ld + h * hs;
      const float* k = q + C;
      const float* v = q + 2 * C;
      float* p = att + (static_cast<size_t>(b) * NH + h) * T * T;
      float* y = out + static_cast<size_t>(b) * T * C + h * hs;
      for (int i0 = 0; i0 < T; i0 += kAttnBlock) {
        const int i1 = std::min(T, i0 + kAttnBlock);
        // scores[i0:i1, 0:i1] = scale * q[i0:i1] @ k[0:i1]^T
        cpu::gemm(false, true, i1 - i0, i1, hs, scale, q + static_cast<size_t>(i0) * ld, ld, k, ld, 0.0f,
                  p + static_cast<size_t>(i0) * T, T);
        for (int t = i0; t < i1; ++t) softmax_row(p + static_cast<size_t>(t) * T, t + 1, i1);
        // y[i0:i1] = P[i0:i1, 0:i1] @ v[0:i1]
        cpu::gemm(false, false, i1 - i0, hs, i1, 1.0f, p + static_cast<size_t>(i0) * T, T, v, ld, 0.0f,
                  y + static_cast<size_t>(i0) * C, C);
      }
    }
  }
}

void attention_backward(float* dqkv, float* datt, const float* dout, const float* qkv, const float* att,
                        int B, int T, int C, int NH) {
  const int hs = C / NH;
  const int ld = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  cpu::SerialBlasScope serial_blas;  // one single-threaded GEMM per (b, h) task
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const size_t qkv_off = static_cast<size_t>(b) * T * ld + h * hs;
      const float* q = qkv + qkv_off;
      const float* k = q + C;
      const float* v = q + 2 * C;
      float* dq = dqkv + qkv_off;
      float* dk = dq + C;
      float* dv = dq + 2 * C;
      const float* p = att + (static_cast<size_t>(b) * NH + h) * T * T;
      float* dp = datt + (static_cast<size_t>(b) * NH + h) * T * T;
      const float* dy = dout + static_cast<size_t>(b) * T * C + h * hs;

      for (int i0 = 0; i0 < T; i0 += kAttnBlock) {
        const int i1 = std::min(T, i0 + kAttnBlock);
        // dP[i0:i1, 0:i1] = dy[i0:i1] @ v[0:i1]^T
        cpu::gemm(false, true, i1 - i0, i1, hs, 1.0f, dy + static_cast<size_t>(i0) * C, C, v, ld, 0.0f,
                  dp + static_cast<size_t>(i0) * T, T);
        // softmax backward in place: dS = P * (dP - sum(P * dP)) * scale
        for (int t = i0; t < i1; ++t) {
          const float* pr = p + static_cast<size_t>(t) * T;
          float* g = dp + static_cast<size_t>(t) * T;
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
        cpu::gemm(false, false, i1 - i0, hs, i1, 1.0f, dp + static_cast<size_t>(i0) * T, T, k, ld, 0.0f,
                  dq + static_cast<size_t>(i0) * ld, ld);
      }
      // Key/value gradients by column block j: only query rows t >= j0 see keys
      // in [j0, j1). dv[j] = P[j0:T, j]^T @ dy[j0:T], dk[j] = dS[j0:T, j]^T @ q[j0:T].
      for (int j0 = 0; j0 < T; j0 += kAttnBlock) {
        const int j1 = std::min(T, j0 + kAttnBlock);
        const size_t diag = static_cast<size_t>(j0) * T + j0;
        cpu::gemm(true, false, j1 - j0, hs, T - j0, 1.0f, p + diag, T, dy + static_cast<size_t>(j0) * C, C,
                  0.0f, dv + static_cast<size_t>(j0) * ld, ld);
        cpu::gemm(true, false, j1 - j0, hs, T - j0, 1.0f, dp + diag, T, q + static_cast<size_t>(j0) * ld, ld,
                  0.0f, dk + static_cast<size_t>(j0) * ld, ld);
      }
    }
  }
}

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
