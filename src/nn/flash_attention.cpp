// Gradient rule: backward accumulates (+=) into parameter gradients and
// overwrites activation gradients (see flash_attention.h).
#include "nn/flash_attention.h"

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "backend/cpu/ops.h"
#include "backend/cpu/vmath.h"
#include "core/error.h"
#include "nn/typed.h"

namespace chorus::nn {

namespace cpu = chorus::backend::cpu;

namespace {

// Forward: query tiles of kFwdRows against key tiles of kFwdCols; backward:
// key tiles of kBwdCols (outer) against query tiles of kBwdRows (inner).
// 128 beat 64 by 5-10% (bigger products; the diagonal is cut finer below):
// bench/attention_bench.cpp.
constexpr int kFwdRows = kFlashTile, kFwdCols = kFlashTile, kBwdRows = kFlashTile, kBwdCols = kFlashTile;
// Rows per chunk of a tile that crosses the diagonal (see for_causal_blocks).
constexpr int kDiagRows = 32;

// The shapes of one call.
struct Flash {
  int B, Tn, C, NH, hs, n_tiles;
  size_t ld;  // row stride of qkv / dqkv: 3C
  float scale;
  // Worth a parallel region: ~B NH T^2 hs / 2 multiply-adds per product (tiny
  // calls, as in the finite-difference tests, run on the calling thread).
  bool parallel() const { return static_cast<double>(B) * NH * Tn * Tn * hs > (1 << 20); }
};

Flash check_flash(const char* what, int B, int Tn, int C, int NH) {
  CHORUS_CHECK(B >= 0 && Tn >= 1 && NH >= 1 && C >= NH && C % NH == 0,
               "%s: shapes B=%d T=%d C=%d NH=%d: expected B >= 0, T >= 1 and C a positive multiple of NH",
               what, B, Tn, C, NH);
  Flash f{B, Tn, C, NH, C / NH, (Tn + kFwdRows - 1) / kFwdRows, 3 * static_cast<size_t>(C), 0.0f};
  f.scale = 1.0f / std::sqrt(static_cast<float>(f.hs));
  return f;
}

// c (rows, cols), leading dimension ld: row r set to -neg[r], or to 0 when neg
// is nullptr. Products then run with beta = 1: OpenBLAS's own beta = 0 pass
// (sgemm_beta) was ~1.3 us per 64 x 64 tile, ~15% of a 64^3 product.
inline void fill_rows(float* c, int ld, int rows, int cols, const float* neg) {
  for (int r = 0; r < rows; ++r) {
    float* row = c + static_cast<size_t>(r) * ld;
    const float x = neg != nullptr ? -neg[r] : 0.0f;
    const cpu::VecF vx = cpu::splat(x);
    int u = 0;
    for (; u + cpu::kLanes <= cols; u += cpu::kLanes) cpu::store(row + u, vx);
    for (; u < cols; ++u) row[u] = x;
  }
}

// y[0, hs) *= f.
inline void scale_row(float* y, int hs, float f) {
#pragma omp simd
  for (int c = 0; c < hs; ++c) y[c] *= f;
}

// Runs block(r0, na, kc) over the query rows [i0, i0 + nr) of a tile against
// keys [j0, j0 + nc): the whole tile at once, or, where it crosses the
// diagonal, in chunks of kDiagRows rows that each stop at their last key
// (with 128-row tiles and 32-row chunks, 3/4 of the masked products skipped).
template <typename F>
inline void for_causal_blocks(int i0, int nr, int j0, int nc, F&& block) {
  if (i0 + 1 - j0 >= nc || nr <= kDiagRows) {  // below the diagonal, or too small to split
    block(0, nr, nc);
    return;
  }
  for (int r0 = 0; r0 < nr; r0 += kDiagRows) {
    const int na = std::min(kDiagRows, nr - r0), kc = std::min(nc, i0 + r0 + na - j0);
    if (kc > 0) block(r0, na, kc);
  }
}

// Query tile `it` of head (b, h): rows [i0, i1) against key tiles [0, i1).
// Online softmax (Milakov & Gimelshein 2018, as in FlashAttention): per row a
// running max m and sum l of exp(s - m); the output accumulates
// exp(s - m) @ v and is rescaled by exp(m_old - m_new) when the max grows.
template <typename T>
void forward_tile(const Flash& f, int b, int h, int it, T* out, float* lse, const T* qkv) {
  constexpr int BR = kFwdRows, BC = kFwdCols;
  const int hs = f.hs, ld = static_cast<int>(f.ld);
  const int i0 = it * BR, i1 = std::min(f.Tn, i0 + BR), nr = i1 - i0;
  const T* base = qkv + static_cast<size_t>(b) * f.Tn * f.ld + h * hs;
  // q, k, v tiles; S (BR, BC), m, l
  float* in = cpu::thread_scratch(cpu::kScratchAttnQKV, static_cast<size_t>(BR + 2 * BC) * hs);
  float* s = cpu::thread_scratch(cpu::kScratchAttnP, static_cast<size_t>(BR) * BC + 2 * BR);
  float* m = s + static_cast<size_t>(BR) * BC;
  float* l = m + BR;
  const F32View q = f32_rows(base + static_cast<size_t>(i0) * f.ld, nr, hs, ld, in);
  T* y_t = out + (static_cast<size_t>(b) * f.Tn + i0) * f.C + h * hs;
  float* y = kIsF32<T> ? reinterpret_cast<float*>(y_t)
                       : cpu::thread_scratch(cpu::kScratchAttnGrad, static_cast<size_t>(BR) * hs);
  const int ldy = kIsF32<T> ? f.C : hs;
  fill_rows(y, ldy, nr, hs, nullptr);

  for (int j0 = 0; j0 < i1; j0 += BC) {
    const int nc = std::min(i1, j0 + BC) - j0;
    const F32View k = f32_rows(base + f.C + static_cast<size_t>(j0) * f.ld, nc, hs, ld, in + BR * hs);
    const F32View v =
        f32_rows(base + 2 * f.C + static_cast<size_t>(j0) * f.ld, nc, hs, ld, in + (BR + BC) * hs);
    // Rows [r0, r0 + na) of the tile against keys [j0, j0 + kc).
    auto block = [&](int r0, int na, int kc) {
      // S (na, kc) = scale * q @ k^T
      fill_rows(s, BC, na, kc, nullptr);
      cpu::gemm(false, true, na, kc, hs, f.scale, q.p + static_cast<size_t>(r0) * q.ld, q.ld, k.p, k.ld, 1.0f,
                s, BC);
      for (int r = r0; r < r0 + na; ++r) {
        float* row = s + static_cast<size_t>(r - r0) * BC;
        const int n = std::min(kc, i0 + r - j0 + 1);  // keys j0 + u <= t; key tile 0 has one for every row
        if (n <= 0) {
          std::fill(row, row + kc, 0.0f);
          continue;
        }
        const float mt = cpu::max_of(row, n);
        if (j0 == 0) {
          m[r] = mt;
          l[r] = cpu::exp_store_sum(row, row, n, mt);
        } else if (mt > m[r]) {
          const float alpha = cpu::exp_approx(m[r] - mt);
          l[r] = l[r] * alpha + cpu::exp_store_sum(row, row, n, mt);
          scale_row(y + static_cast<size_t>(r) * ldy, hs, alpha);
          m[r] = mt;
        } else {
          l[r] += cpu::exp_store_sum(row, row, n, m[r]);
        }
        std::fill(row + n, row + kc, 0.0f);  // the causal mask (diagonal tiles only)
      }
      // y (na, hs) += exp(S - m) @ v
      cpu::gemm(false, false, na, hs, kc, 1.0f, s, BC, v.p, v.ld, 1.0f, y + static_cast<size_t>(r0) * ldy,
                ldy);
    };
    for_causal_blocks(i0, nr, j0, nc, block);
  }
  float* lse_t = lse + (static_cast<size_t>(b) * f.NH + h) * f.Tn + i0;
  for (int r = 0; r < nr; ++r) {
    scale_row(y + static_cast<size_t>(r) * ldy, hs, 1.0f / l[r]);
    lse_t[r] = m[r] + std::log(l[r]);
  }
  store_rows(y_t, f.C, y, ldy, nr, hs);
}

// Head (b, h): key tiles outer, query tiles from the diagonal down inner.
// Per tile pair: S = scale q k^T, P = exp(S - lse), dP = dout v^T,
// dS = P (dP - D) with D = rowsum(dout * out) (FlashAttention-2, sec. 3.1:
// sum_s P_ts dP_ts = dout_t . out_t), dv += P^T dout, dk += scale dS^T q,
// dq += scale dS k.
template <typename T>
void backward_head(const Flash& f, int b, int h, T* dqkv, const T* dout, const T* qkv, const T* out,
                   const float* lse) {
  constexpr int BR = kBwdRows, BC = kBwdCols;
  const int hs = f.hs, Tn = f.Tn, ld = static_cast<int>(f.ld);
  const T* base = qkv + static_cast<size_t>(b) * Tn * f.ld + h * hs;
  T* dbase = dqkv + static_cast<size_t>(b) * Tn * f.ld + h * hs;
  const T* dy_base = dout + static_cast<size_t>(b) * Tn * f.C + h * hs;
  const T* y_base = out + static_cast<size_t>(b) * Tn * f.C + h * hs;
  const float* lse_h = lse + (static_cast<size_t>(b) * f.NH + h) * Tn;

  // k, v tiles (BC rows), q, dout tiles (BR rows)
  float* in = cpu::thread_scratch(cpu::kScratchAttnQKV, static_cast<size_t>(2 * BC + 2 * BR) * hs);
  float* kin = in;
  float* vin = kin + BC * hs;
  float* qin = vin + BC * hs;
  float* dyin = qin + BR * hs;
  float* s = cpu::thread_scratch(cpu::kScratchAttnP, static_cast<size_t>(BR) * BC);
  float* dp = cpu::thread_scratch(cpu::kScratchAttnDS, static_cast<size_t>(BR) * BC);
  // D (Tn); for 16-bit T also fp32 dk, dv tiles and the head's dq.
  const size_t n_grad = Tn + (kIsF32<T> ? 0 : (2 * static_cast<size_t>(BC) + Tn) * hs);
  float* grad = cpu::thread_scratch(cpu::kScratchAttnGrad, n_grad);
  float* D = grad;
  for (int t = 0; t < Tn; ++t) {
    const T* dyr = dy_base + static_cast<size_t>(t) * f.C;
    const T* yr = y_base + static_cast<size_t>(t) * f.C;
    if constexpr (kIsF32<T>) {
      D[t] = cpu::dot(dyr, yr, hs);
    } else {  // out as stored, rounded
      convert_serial(qin, dyr, hs);
      convert_serial(dyin, yr, hs);
      D[t] = cpu::dot(qin, dyin, hs);
    }
  }
  float* dk_acc = grad + Tn;
  float* dv_acc = dk_acc + BC * hs;
  float* dq = kIsF32<T> ? reinterpret_cast<float*>(dbase) : dv_acc + BC * hs;
  const int ldq = kIsF32<T> ? ld : hs, ldkv = kIsF32<T> ? ld : hs;
  fill_rows(dq, ldq, Tn, hs, nullptr);

  for (int j0 = 0; j0 < Tn; j0 += BC) {
    const int nc = std::min(Tn, j0 + BC) - j0;
    const F32View k = f32_rows(base + f.C + static_cast<size_t>(j0) * f.ld, nc, hs, ld, kin);
    const F32View v = f32_rows(base + 2 * f.C + static_cast<size_t>(j0) * f.ld, nc, hs, ld, vin);
    float* dk = kIsF32<T> ? reinterpret_cast<float*>(dbase + f.C + static_cast<size_t>(j0) * f.ld) : dk_acc;
    float* dv =
        kIsF32<T> ? reinterpret_cast<float*>(dbase + 2 * f.C + static_cast<size_t>(j0) * f.ld) : dv_acc;
    fill_rows(dk, ldkv, nc, hs, nullptr);
    fill_rows(dv, ldkv, nc, hs, nullptr);
    // query tiles that see a key of this tile: from the one holding row j0 on
    for (int i0 = j0 / BR * BR; i0 < Tn; i0 += BR) {
      const int nr = std::min(Tn, i0 + BR) - i0;
      const F32View q = f32_rows(base + static_cast<size_t>(i0) * f.ld, nr, hs, ld, qin);
      const F32View dy = f32_rows(dy_base + static_cast<size_t>(i0) * f.C, nr, hs, f.C, dyin);
      // Query rows [i0 + r0, i0 + r0 + na) against keys [j0, j0 + kc).
      auto block = [&](int r0, int na, int kc) {
        const float* qb = q.p + static_cast<size_t>(r0) * q.ld;
        const float* dyb = dy.p + static_cast<size_t>(r0) * dy.ld;
        // s (na, kc) = scale * q @ k^T - lse; dp (na, kc) = dy @ v^T - D
        fill_rows(s, BC, na, kc, lse_h + i0 + r0);
        fill_rows(dp, BC, na, kc, D + i0 + r0);
        cpu::gemm(false, true, na, kc, hs, f.scale, qb, q.ld, k.p, k.ld, 1.0f, s, BC);
        cpu::gemm(false, true, na, kc, hs, 1.0f, dyb, dy.ld, v.p, v.ld, 1.0f, dp, BC);
        // P = exp(s); scale * dS = scale * P * dp, in place
        const cpu::VecF vs = cpu::splat(f.scale);
        for (int r = 0; r < na; ++r) {
          float* p = s + static_cast<size_t>(r) * BC;
          float* g = dp + static_cast<size_t>(r) * BC;
          const int n = std::clamp(i0 + r0 + r - j0 + 1, 0, kc);  // keys j0 + u <= t
          int u = 0;
          for (; u + cpu::kLanes <= n; u += cpu::kLanes) {
            const cpu::VecF pv = cpu::exp_approx(cpu::load(p + u));
            cpu::store(p + u, pv);
            cpu::store(g + u, pv * cpu::load(g + u) * vs);
          }
          for (; u < n; ++u) {
            p[u] = cpu::exp_approx(p[u]);
            g[u] = p[u] * g[u] * f.scale;
          }
          for (; u < kc; ++u) p[u] = g[u] = 0.0f;  // the causal mask (diagonal tiles only)
        }
        // dv (kc, hs) += P^T @ dy; dk (kc, hs) += dS^T @ q; dq (na, hs) += dS @ k
        cpu::gemm(true, false, kc, hs, na, 1.0f, s, BC, dyb, dy.ld, 1.0f, dv, ldkv);
        cpu::gemm(true, false, kc, hs, na, 1.0f, dp, BC, qb, q.ld, 1.0f, dk, ldkv);
        cpu::gemm(false, false, na, hs, kc, 1.0f, dp, BC, k.p, k.ld, 1.0f,
                  dq + static_cast<size_t>(i0 + r0) * ldq, ldq);
      };
      for_causal_blocks(i0, nr, j0, nc, block);
    }
    if constexpr (!kIsF32<T>) {
      store_rows(dbase + f.C + static_cast<size_t>(j0) * f.ld, ld, dk_acc, hs, nc, hs);
      store_rows(dbase + 2 * f.C + static_cast<size_t>(j0) * f.ld, ld, dv_acc, hs, nc, hs);
    }
  }
  if constexpr (!kIsF32<T>) store_rows(dbase, ld, dq, hs, Tn, hs);
}

}  // namespace

template <typename T>
void flash_attention_forward(T* out, float* lse, const T* qkv, int B, int Tn, int C, int NH) {
  const Flash f = check_flash("flash_attention_forward", B, Tn, C, NH);
  const int n_heads = B * NH;
  const long n_tasks = static_cast<long>(n_heads) * f.n_tiles;
  cpu::SerialBlasScope serial_blas;
  // Query tile it costs it + 1 tile products: hand out the last tiles first.
#pragma omp parallel for schedule(dynamic, 1) if (f.parallel())
  for (long task = 0; task < n_tasks; ++task) {
    const int it = f.n_tiles - 1 - static_cast<int>(task / n_heads);
    const int bh = static_cast<int>(task % n_heads);
    forward_tile(f, bh / NH, bh % NH, it, out, lse, qkv);
  }
}

template <typename T>
void flash_attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const float* lse, int B,
                              int Tn, int C, int NH) {
  const Flash f = check_flash("flash_attention_backward", B, Tn, C, NH);
  cpu::SerialBlasScope serial_blas;
#pragma omp parallel for collapse(2) schedule(static) if (f.parallel())
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h) backward_head(f, b, h, dqkv, dout, qkv, out, lse);
}

#define CHORUS_INSTANTIATE(T)                                                                              \
  template void flash_attention_forward<T>(T*, float*, const T*, int, int, int, int);                      \
  template void flash_attention_backward<T>(T*, const T*, const T*, const T*, const float*, int, int, int, \
                                            int);
CHORUS_INSTANTIATE(float)
CHORUS_INSTANTIATE(bf16)
CHORUS_INSTANTIATE(fp16)
#undef CHORUS_INSTANTIATE

}  // namespace chorus::nn
