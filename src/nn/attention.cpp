// Gradient rule: backward accumulates (+=) into parameter gradients and
// overwrites activation gradients (see attention.h).
#include "nn/attention.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu/ops.h"
#include "backend/cpu/vmath.h"
#include "core/error.h"
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

// The shapes of one mha call and the key extents they imply.
struct Mha {
  int B, Tq, Tk, C, NH, hs;
  bool causal;
  const int* kv_len;
  float scale;

  int n_valid(int b) const { return kv_len != nullptr ? kv_len[b] : Tk; }
  // Queries per row block: causal rows skip the keys after their block; other
  // rows all see the same keys, so one block does.
  int row_block() const { return causal ? kAttnBlock : Tq; }
  // Keys the block of rows [i0, i1) multiplies: [0, key_end).
  int key_end(int i1, int nv) const { return causal ? std::min(i1, nv) : nv; }
  // Keys query t attends to: [0, n_keys(t)).
  int n_keys(int t, int nv) const { return causal ? std::min(t + 1, nv) : nv; }
  // Entries of row t of att that are written (the rest is never read).
  int row_end(int i1) const { return causal ? i1 : Tk; }
};

Mha check_mha(int B, int Tq, int Tk, int C, int NH, bool causal, const int* kv_len) {
  CHORUS_CHECK(B >= 0 && Tq >= 1 && Tk >= 1 && NH >= 1 && C % NH == 0,
               "mha: shapes B=%d Tq=%d Tk=%d C=%d NH=%d: expected Tq, Tk >= 1 and C a multiple of NH", B, Tq,
               Tk, C, NH);
  CHORUS_CHECK(!causal || Tq == Tk, "mha: causal attention needs Tq == Tk, got Tq=%d Tk=%d", Tq, Tk);
  if (kv_len != nullptr)
    for (int b = 0; b < B; ++b)
      CHORUS_CHECK(kv_len[b] >= 1 && kv_len[b] <= Tk, "mha: kv_len[%d] = %d, expected in [1, Tk=%d]", b,
                   kv_len[b], Tk);
  const int hs = C / NH;
  return {B, Tq, Tk, C, NH, hs, causal, kv_len, 1.0f / std::sqrt(static_cast<float>(hs))};
}

// Runs f(b, h) for every (batch, head) as OpenMP tasks, each GEMM inside
// single-threaded. Equal-sized tasks are split statically; with padding the
// sizes differ and threads take tasks as they finish.
template <typename F>
void for_each_head(const Mha& m, F&& f) {
  cpu::SerialBlasScope serial_blas;
  if (m.kv_len == nullptr) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < m.B; ++b)
      for (int h = 0; h < m.NH; ++h) f(b, h);
  } else {
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < m.B; ++b)
      for (int h = 0; h < m.NH; ++h) f(b, h);
  }
}

template <typename T>
void forward_head(const Mha& m, int b, int h, T* out, T* att, const T* q, size_t q_stride, const T* k,
                  const T* v, size_t kv_stride, const AttentionBias* bias) {
  const float bias_w = bias != nullptr ? bias->head_weight[h] : 0.0f;
  const int hs = m.hs, Tq = m.Tq, Tk = m.Tk, nv = m.n_valid(b);
  const size_t TT = static_cast<size_t>(Tq) * Tk, Qhs = static_cast<size_t>(Tq) * hs;
  const size_t Khs = static_cast<size_t>(nv) * hs;
  const T* q_h = q + static_cast<size_t>(b) * Tq * q_stride + h * hs;
  const T* k_h = k + static_cast<size_t>(b) * Tk * kv_stride + h * hs;
  const T* v_h = v + static_cast<size_t>(b) * Tk * kv_stride + h * hs;
  float* in = cpu::thread_scratch(cpu::kScratchAttnQKV, Qhs + 2 * Khs);
  const F32View qf = f32_rows(q_h, Tq, hs, static_cast<int>(q_stride), in);
  const F32View kf = f32_rows(k_h, nv, hs, static_cast<int>(kv_stride), in + Qhs);
  const F32View vf = f32_rows(v_h, nv, hs, static_cast<int>(kv_stride), in + Qhs + Khs);
  T* p_t = att + (static_cast<size_t>(b) * m.NH + h) * TT;
  float* p = f32_accumulator(p_t, TT, cpu::kScratchAttnP);  // ld Tk
  T* y_t = out + static_cast<size_t>(b) * Tq * m.C + h * hs;
  float* y = kIsF32<T> ? reinterpret_cast<float*>(y_t) : cpu::thread_scratch(cpu::kScratchAttnGrad, Qhs);
  const int ldy = kIsF32<T> ? m.C : hs;
  const int rb = m.row_block();
  for (int i0 = 0; i0 < Tq; i0 += rb) {
    const int i1 = std::min(Tq, i0 + rb);
    const int kend = m.key_end(i1, nv), rend = m.row_end(i1);
    float* pb = p + static_cast<size_t>(i0) * Tk;
    // scores[i0:i1, 0:kend] = scale * q[i0:i1] @ k[0:kend]^T
    cpu::gemm(false, true, i1 - i0, kend, hs, m.scale, qf.p + static_cast<size_t>(i0) * qf.ld, qf.ld, kf.p,
              kf.ld, 0.0f, pb, Tk);
    for (int t = i0; t < i1; ++t) {
      float* row = p + static_cast<size_t>(t) * Tk;
      const int n = m.n_keys(t, nv);
      if (bias_w != 0.0f) {
        const float* br = bias->values + (static_cast<size_t>(b) * Tq + t) * Tk;
        for (int u = 0; u < n; ++u) row[u] += bias_w * br[u];
      }
      softmax_row(row, n, rend);
      if constexpr (!kIsF32<T>) {
        for (int u = 0; u < n; ++u) row[u] = round_to<T>(row[u]);  // what backward will read
        convert_serial(p_t + static_cast<size_t>(t) * Tk, row, rend);
      }
    }
    // y[i0:i1] = P[i0:i1, 0:kend] @ v[0:kend]
    cpu::gemm(false, false, i1 - i0, hs, kend, 1.0f, pb, Tk, vf.p, vf.ld, 0.0f,
              y + static_cast<size_t>(i0) * ldy, ldy);
  }
  store_rows(y_t, m.C, y, ldy, Tq, hs);
}

// Zeros `rows` rows of hs values at dst with stride ld (gradients of padded keys).
template <typename T>
void zero_rows(T* dst, size_t ld, int rows, int hs) {
  for (int r = 0; r < rows; ++r) std::fill_n(dst + static_cast<size_t>(r) * ld, hs, from_f32<T>(0.0f));
}

template <typename T>
void backward_head(const Mha& m, int b, int h, T* dq, size_t dq_stride, T* dk, T* dv, size_t dkv_stride,
                   const T* dout, const T* q, size_t q_stride, const T* k, const T* v, size_t kv_stride,
                   const T* att) {
  const int hs = m.hs, Tq = m.Tq, Tk = m.Tk, nv = m.n_valid(b);
  const size_t TT = static_cast<size_t>(Tq) * Tk, Qhs = static_cast<size_t>(Tq) * hs;
  const size_t Khs = static_cast<size_t>(nv) * hs;
  const size_t q_off = static_cast<size_t>(b) * Tq * q_stride + h * hs;
  const size_t kv_off = static_cast<size_t>(b) * Tk * kv_stride + h * hs;
  float* in = cpu::thread_scratch(cpu::kScratchAttnQKV, 2 * Qhs + 2 * Khs);
  const F32View qf = f32_rows(q + q_off, Tq, hs, static_cast<int>(q_stride), in);
  const F32View kf = f32_rows(k + kv_off, nv, hs, static_cast<int>(kv_stride), in + Qhs);
  const F32View vf = f32_rows(v + kv_off, nv, hs, static_cast<int>(kv_stride), in + Qhs + Khs);
  const F32View dy =
      f32_rows(dout + static_cast<size_t>(b) * Tq * m.C + h * hs, Tq, hs, m.C, in + Qhs + 2 * Khs);
  T* dq_t = dq + static_cast<size_t>(b) * Tq * dq_stride + h * hs;
  T* dk_t = dk + static_cast<size_t>(b) * Tk * dkv_stride + h * hs;
  T* dv_t = dv + static_cast<size_t>(b) * Tk * dkv_stride + h * hs;
  float* grad = cpu::thread_scratch(cpu::kScratchAttnGrad, Qhs + 2 * Khs);
  float* dqf = kIsF32<T> ? reinterpret_cast<float*>(dq_t) : grad;
  float* dkf = kIsF32<T> ? reinterpret_cast<float*>(dk_t) : grad + Qhs;
  float* dvf = kIsF32<T> ? reinterpret_cast<float*>(dv_t) : grad + Qhs + Khs;
  const int ldq = kIsF32<T> ? static_cast<int>(dq_stride) : hs;
  const int ldkv = kIsF32<T> ? static_cast<int>(dkv_stride) : hs;
  const int rb = m.row_block();
  const T* p_t = att + (static_cast<size_t>(b) * m.NH + h) * TT;
  const float* p;
  if constexpr (kIsF32<T>) {
    p = p_t;
  } else {  // each row's multiplied part [0, key_end of its row block)
    float* p32 = cpu::thread_scratch(cpu::kScratchAttnP, TT);
    for (int t = 0; t < Tq; ++t)
      convert_serial(p32 + static_cast<size_t>(t) * Tk, p_t + static_cast<size_t>(t) * Tk,
                     m.key_end(std::min(Tq, (t / rb + 1) * rb), nv));
    p = p32;
  }
  float* dp = cpu::thread_scratch(cpu::kScratchAttnDS, TT);

  for (int i0 = 0; i0 < Tq; i0 += rb) {
    const int i1 = std::min(Tq, i0 + rb);
    const int kend = m.key_end(i1, nv);
    // dP[i0:i1, 0:kend] = dy[i0:i1] @ v[0:kend]^T
    cpu::gemm(false, true, i1 - i0, kend, hs, 1.0f, dy.p + static_cast<size_t>(i0) * dy.ld, dy.ld, vf.p,
              vf.ld, 0.0f, dp + static_cast<size_t>(i0) * Tk, Tk);
    // softmax backward in place: dS = P * (dP - sum(P * dP)) * scale
    for (int t = i0; t < i1; ++t) {
      const float* pr = p + static_cast<size_t>(t) * Tk;
      float* g = dp + static_cast<size_t>(t) * Tk;
      const int n = m.n_keys(t, nv);
      const float s = cpu::dot(pr, g, n);
      const cpu::VecF vs = cpu::splat(s);
      int u = 0;
      for (; u + cpu::kLanes <= n; u += cpu::kLanes)
        cpu::store(g + u, cpu::load(pr + u) * (cpu::load(g + u) - vs) * m.scale);
      for (; u < n; ++u) g[u] = pr[u] * (g[u] - s) * m.scale;
      for (u = n; u < kend; ++u) g[u] = 0.0f;
    }
    // dq[i0:i1] = dS[i0:i1, 0:kend] @ k[0:kend]
    cpu::gemm(false, false, i1 - i0, hs, kend, 1.0f, dp + static_cast<size_t>(i0) * Tk, Tk, kf.p, kf.ld, 0.0f,
              dqf + static_cast<size_t>(i0) * ldq, ldq);
  }
  // Key/value gradients by column block [j0, j1): causal, only query rows
  // t >= j0 see those keys. dv[j] = P[r0:Tq, j]^T @ dy[r0:Tq],
  // dk[j] = dS[r0:Tq, j]^T @ q[r0:Tq].
  const int cb = m.causal ? kAttnBlock : nv;
  for (int j0 = 0; j0 < nv; j0 += cb) {
    const int j1 = std::min(nv, j0 + cb);
    const int r0 = m.causal ? j0 : 0;
    const size_t at = static_cast<size_t>(r0) * Tk + j0;
    cpu::gemm(true, false, j1 - j0, hs, Tq - r0, 1.0f, p + at, Tk, dy.p + static_cast<size_t>(r0) * dy.ld,
              dy.ld, 0.0f, dvf + static_cast<size_t>(j0) * ldkv, ldkv);
    cpu::gemm(true, false, j1 - j0, hs, Tq - r0, 1.0f, dp + at, Tk, qf.p + static_cast<size_t>(r0) * qf.ld,
              qf.ld, 0.0f, dkf + static_cast<size_t>(j0) * ldkv, ldkv);
  }
  if constexpr (!kIsF32<T>) {
    store_rows(dq_t, static_cast<int>(dq_stride), dqf, hs, Tq, hs);
    store_rows(dk_t, static_cast<int>(dkv_stride), dkf, hs, nv, hs);
    store_rows(dv_t, static_cast<int>(dkv_stride), dvf, hs, nv, hs);
  }
  zero_rows(dk_t + static_cast<size_t>(nv) * dkv_stride, dkv_stride, Tk - nv, hs);
  zero_rows(dv_t + static_cast<size_t>(nv) * dkv_stride, dkv_stride, Tk - nv, hs);
}

}  // namespace

template <typename T>
void mha_forward(T* out, T* att, const T* q, size_t q_stride, const T* k, const T* v, size_t kv_stride,
                 const int* kv_len, int B, int Tq, int Tk, int C, int NH, bool causal, const AttentionBias* bias) {
  const Mha m = check_mha(B, Tq, Tk, C, NH, causal, kv_len);
  CHORUS_CHECK(bias == nullptr || (!causal && bias->values != nullptr && bias->head_weight != nullptr),
               "mha_forward: an attention bias needs non-causal attention, values and head weights");
  for_each_head(m, [&](int b, int h) { forward_head(m, b, h, out, att, q, q_stride, k, v, kv_stride, bias); });
}

template <typename T>
void mha_backward(T* dq, size_t dq_stride, T* dk, T* dv, size_t dkv_stride, const T* dout, const T* q,
                  size_t q_stride, const T* k, const T* v, size_t kv_stride, const T* att, const int* kv_len,
                  int B, int Tq, int Tk, int C, int NH, bool causal) {
  const Mha m = check_mha(B, Tq, Tk, C, NH, causal, kv_len);
  for_each_head(m, [&](int b, int h) {
    backward_head(m, b, h, dq, dq_stride, dk, dv, dkv_stride, dout, q, q_stride, k, v, kv_stride, att);
  });
}

template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int B, int Tn, int C, int NH) {
  const size_t ld = 3 * static_cast<size_t>(C);
  mha_forward(out, att, qkv, ld, qkv + C, qkv + 2 * C, ld, nullptr, B, Tn, Tn, C, NH, /*causal=*/true);
}

template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* att, int B, int Tn, int C, int NH) {
  const size_t ld = 3 * static_cast<size_t>(C);
  mha_backward(dqkv, ld, dqkv + C, dqkv + 2 * C, ld, dout, qkv, ld, qkv + C, qkv + 2 * C, ld, att, nullptr, B,
               Tn, Tn, C, NH, /*causal=*/true);
}

#define CHORUS_INSTANTIATE(T)                                                                               \
  template void mha_forward<T>(T*, T*, const T*, size_t, const T*, const T*, size_t, const int*, int, int,  \
                               int, int, int, bool, const AttentionBias*);                                  \
  template void mha_backward<T>(T*, size_t, T*, T*, size_t, const T*, const T*, size_t, const T*, const T*, \
                                size_t, const T*, const int*, int, int, int, int, int, bool);               \
  template void attention_forward<T>(T*, T*, const T*, int, int, int, int);                                 \
  template void attention_backward<T>(T*, const T*, const T*, const T*, int, int, int, int);
CHORUS_INSTANTIATE(float)
CHORUS_INSTANTIATE(bf16)
CHORUS_INSTANTIATE(fp16)
#undef CHORUS_INSTANTIATE

void mha_decode(float* out, float* scores, const float* q, size_t q_stride, const float* k, const float* v,
                size_t kv_stride, size_t batch_stride, const int* kv_len, int B, int n_keys, int C, int NH,
                const AttentionBias* bias) {
  CHORUS_CHECK(n_keys >= 1 && NH >= 1 && C % NH == 0,
               "mha_decode: shapes n_keys=%d C=%d NH=%d: expected n_keys >= 1 and C a multiple of NH", n_keys,
               C, NH);
  if (kv_len != nullptr)
    for (int b = 0; b < B; ++b)
      CHORUS_CHECK(kv_len[b] >= 1 && kv_len[b] <= n_keys, "mha_decode: kv_len[%d] = %d, expected in [1, %d]",
                   b, kv_len[b], n_keys);
  const int hs = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  cpu::SerialBlasScope serial_blas;
#pragma omp parallel for collapse(2) \
    schedule(static) if (static_cast <size_t>(B) * NH * n_keys * hs > (1u << 15))
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const int n = kv_len != nullptr ? kv_len[b] : n_keys;
      const float* qh = q + b * q_stride + h * hs;
      const float* kh = k + b * batch_stride + h * hs;
      const float* vh = v + b * batch_stride + h * hs;
      float* s = scores + (static_cast<size_t>(b) * NH + h) * n_keys;
      // s (1, n) = scale * q (1, hs) @ k^T; y (1, hs) = p (1, n) @ v
      cpu::gemm(false, true, 1, n, hs, scale, qh, hs, kh, static_cast<int>(kv_stride), 0.0f, s, n_keys);
      if (bias != nullptr && bias->head_weight[h] != 0.0f) {
        const float* br = bias->values + static_cast<size_t>(b) * n_keys;
        for (int u = 0; u < n; ++u) s[u] += bias->head_weight[h] * br[u];
      }
      softmax_row(s, n, n_keys);
      cpu::gemm(false, false, 1, hs, n, 1.0f, s, n_keys, vh, static_cast<int>(kv_stride), 0.0f,
                out + static_cast<size_t>(b) * C + h * hs, C);
    }
  }
}

void attention_decode(float* out, float* scores, const float* q, size_t q_stride, const float* k_cache,
                      const float* v_cache, size_t cache_stride, int B, int n_ctx, int C, int NH) {
  mha_decode(out, scores, q, q_stride, k_cache, v_cache, static_cast<size_t>(C), cache_stride, nullptr, B,
             n_ctx, C, NH);
}

}  // namespace chorus::nn
