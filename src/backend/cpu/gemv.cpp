#include "backend/cpu/gemv.h"

// GCC 12's AVX-512 conversion intrinsics build on _mm512_undefined_*(), which
// -Wmaybe-uninitialized / -Wuninitialized report as uninitialised (a known
// false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "backend/cpu/gemm.h"
#include "core/dtype.h"
#include "core/error.h"

namespace chorus::backend::cpu {

void quantize_rows_int8(const float* W, int rows, int cols, size_t ld, int8_t* q, float* scale) {
  CHORUS_CHECK(rows >= 0 && cols >= 0 && ld >= static_cast<size_t>(cols),
               "quantize_rows_int8: bad shape rows %d cols %d ld %zu", rows, cols, ld);
  for (int r = 0; r < rows; ++r) {
    const float* w = W + static_cast<size_t>(r) * ld;
    float amax = 0.0f;
    for (int c = 0; c < cols; ++c) {
      CHORUS_CHECK(std::isfinite(w[c]), "quantize_rows_int8: row %d column %d is %g (weights must be finite)", r, c,
                   static_cast<double>(w[c]));
      amax = std::max(amax, std::fabs(w[c]));
    }
    const float s = amax / 127.0f;
    scale[r] = s;
    int8_t* qr = q + static_cast<size_t>(r) * cols;
    const float inv = s > 0.0f ? 1.0f / s : 0.0f;
    for (int c = 0; c < cols; ++c) {
      const float v = std::nearbyint(w[c] * inv);
      qr[c] = static_cast<int8_t>(std::clamp(v, -127.0f, 127.0f));
    }
  }
}

void dequantize_rows_int8(const int8_t* q, const float* scale, int rows, int cols, float* W) {
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      const size_t i = static_cast<size_t>(r) * cols + c;
      W[i] = scale[r] * static_cast<float>(q[i]);
    }
}

namespace {

// One weight as fp32: fp32 itself, an int8 code, or a bf16 value (exact).
inline float widen(float w) { return w; }
inline float widen(int8_t q) { return static_cast<float>(q); }
inline float widen(bf16 h) { return bf16_bits_to_f32(h.bits); }

// sum_c w[c] x[c] for fp32 weights, int8 codes or bf16 weights, accumulated in fp32.
template <class T>
float dot_portable(const T* w, const float* x, int cols) {
  float acc = 0.0f;
  for (int c = 0; c < cols; ++c) acc += widen(w[c]) * x[c];
  return acc;
}

// 16 weights as fp32: a load, or 16 int8 codes widened.
__attribute__((target("avx512f"))) inline __m512 load16(const float* w) { return _mm512_loadu_ps(w); }
__attribute__((target("avx512f"))) inline __m512 load16(const int8_t* q) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q))));
}
__attribute__((target("avx512f"))) inline __m512 load16(const bf16* h) {  // bf16 -> fp32 is a 16-bit shift
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h))), 16));
}

// Four accumulators of 16 lanes, then 16 at a time, then the scalar tail.
template <class T>
__attribute__((target("avx512f"))) float dot_avx512(const T* w, const float* x, int cols) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
  int c = 0;
  for (; c + 64 <= cols; c += 64) {
    a0 = _mm512_fmadd_ps(load16(w + c), _mm512_loadu_ps(x + c), a0);
    a1 = _mm512_fmadd_ps(load16(w + c + 16), _mm512_loadu_ps(x + c + 16), a1);
    a2 = _mm512_fmadd_ps(load16(w + c + 32), _mm512_loadu_ps(x + c + 32), a2);
    a3 = _mm512_fmadd_ps(load16(w + c + 48), _mm512_loadu_ps(x + c + 48), a3);
  }
  for (; c + 16 <= cols; c += 16) a0 = _mm512_fmadd_ps(load16(w + c), _mm512_loadu_ps(x + c), a0);
  float acc = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  for (; c < cols; ++c) acc += widen(w[c]) * x[c];
  return acc;
}

// 8 weights as fp32 (AVX2): a load, or 8 int8 codes widened.
__attribute__((target("avx2,fma"))) inline __m256 load8(const float* w) { return _mm256_loadu_ps(w); }
__attribute__((target("avx2,fma"))) inline __m256 load8(const int8_t* q) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q))));
}
__attribute__((target("avx2,fma"))) inline __m256 load8(const bf16* h) {
  return _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h))), 16));
}

// The same with four accumulators of 8 lanes, for CPUs with AVX2 + FMA and no
// AVX-512 (AMD Zen 2 / 3, older Intel).
template <class T>
__attribute__((target("avx2,fma"))) float dot_avx2(const T* w, const float* x, int cols) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  int c = 0;
  for (; c + 32 <= cols; c += 32) {
    a0 = _mm256_fmadd_ps(load8(w + c), _mm256_loadu_ps(x + c), a0);
    a1 = _mm256_fmadd_ps(load8(w + c + 8), _mm256_loadu_ps(x + c + 8), a1);
    a2 = _mm256_fmadd_ps(load8(w + c + 16), _mm256_loadu_ps(x + c + 16), a2);
    a3 = _mm256_fmadd_ps(load8(w + c + 24), _mm256_loadu_ps(x + c + 24), a3);
  }
  for (; c + 8 <= cols; c += 8) a0 = _mm256_fmadd_ps(load8(w + c), _mm256_loadu_ps(x + c), a0);
  const __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  float acc = _mm_cvtss_f32(h);
  for (; c < cols; ++c) acc += widen(w[c]) * x[c];
  return acc;
}

// The widest dot loop this CPU runs, chosen at run time (binaries move
// between CPU models), unless a test forced one (set_gemv_path).
enum class DotPath { kPortable, kAvx2, kAvx512 };
DotPath best_dot_path() {
  const CpuFeatures& f = cpu_features();
  if (f.avx512f) return DotPath::kAvx512;
  if (f.avx2 && f.fma) return DotPath::kAvx2;
  return DotPath::kPortable;
}
std::atomic<int> g_forced_path{-1};  // -1: best_dot_path()
DotPath dot_path() {
  const int forced = g_forced_path.load(std::memory_order_relaxed);
  return forced >= 0 ? static_cast<DotPath>(forced) : best_dot_path();
}

// Y (M, rows) = alpha * scale[r] * X W^T + beta * Y (scale nullptr: 1) for fp32
// weights, int8 codes or bf16 weights, the dot loop of `path`. Each weight row is read from
// memory once and stays in L1 for the M vectors.
template <class T>
void rows_product(DotPath path, int M, const float* X, size_t ldx, const T* W, size_t ldw, const float* scale,
                  int rows, int cols, float* Y, size_t ldy, float alpha, float beta) {
  CHORUS_CHECK(M >= 0 && rows >= 0 && cols >= 0 && ldw >= static_cast<size_t>(cols) &&
                   (M <= 1 || (ldx >= static_cast<size_t>(cols) && ldy >= static_cast<size_t>(rows))),
               "gemm_rows: bad shape M %d rows %d cols %d ldx %zu ldw %zu ldy %zu", M, rows, cols, ldx, ldw, ldy);
  // int8 codes or bf16 for several vectors: each row is widened to fp32 once
  // (into an L1-resident buffer) and then dotted with every vector, instead of
  // being widened again per vector.
  constexpr bool kCodes = !std::is_same_v<T, float>;
  const bool widen_once = kCodes && M > 1;
  const auto run = [&](auto dot, auto dot_f32) {
#pragma omp parallel if (!omp_in_parallel() && static_cast<size_t>(rows) * cols > (1u << 16))
    {
      thread_local std::vector<float> row;
      if (widen_once && row.size() < static_cast<size_t>(cols)) row.resize(cols);
#pragma omp for schedule(static)
      for (int r = 0; r < rows; ++r) {
        const T* w = W + static_cast<size_t>(r) * ldw;
        const float a = scale != nullptr ? alpha * scale[r] : alpha;
        if (widen_once)
          for (int c = 0; c < cols; ++c) row[c] = widen(w[c]);
        for (int m = 0; m < M; ++m) {
          float* y = Y + static_cast<size_t>(m) * ldy + r;
          const float* x = X + static_cast<size_t>(m) * ldx;
          const float v = a * (widen_once ? dot_f32(row.data(), x, cols) : dot(w, x, cols));
          *y = beta == 0.0f ? v : beta * *y + v;
        }
      }
    }
  };
  switch (path) {
    case DotPath::kAvx512: return run(dot_avx512<T>, dot_avx512<float>);
    case DotPath::kAvx2: return run(dot_avx2<T>, dot_avx2<float>);
    case DotPath::kPortable: break;
  }
  run(dot_portable<T>, dot_portable<float>);
}


// ---- int8 activations x int8 weights (gemm_rows_w8a8) ----------------------------

// Each vector quantised per row, as three byte views of the same codes: xq
// (s8, the portable loop and the tails), |xq| (u8, the AVX2 sign trick) and
// xq + 128 (u8, VNNI's unsigned operand with a zero point).
struct QuantRows {
  std::vector<int8_t> xq;
  std::vector<uint8_t> abs, biased;
  std::vector<float> sx;
};

void quantize_activation_rows(const float* X, size_t ldx, int M, int cols, QuantRows& out) {
  const size_t n = static_cast<size_t>(M) * cols;
  out.xq.resize(n);
  out.abs.resize(n);
  out.biased.resize(n);
  out.sx.resize(M);
  for (int m = 0; m < M; ++m) {
    const float* x = X + static_cast<size_t>(m) * ldx;
    float amax = 0.0f;
    for (int c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(x[c]));
    const float s = amax / 127.0f, inv = s > 0.0f ? 1.0f / s : 0.0f;
    out.sx[m] = s;
    for (int c = 0; c < cols; ++c) {
      const size_t i = static_cast<size_t>(m) * cols + c;
      const int v = static_cast<int>(std::clamp(std::nearbyint(x[c] * inv), -127.0f, 127.0f));
      out.xq[i] = static_cast<int8_t>(v);
      out.abs[i] = static_cast<uint8_t>(v < 0 ? -v : v);
      out.biased[i] = static_cast<uint8_t>(v + 128);
    }
  }
}

// dots[j] = sum_c q[c] xq[vec j][c] exactly (int32), for nv <= 4 vectors
// starting at vector m0, over columns [c0, cols).
void int_dots_portable(const int8_t* q, const QuantRows& a, int m0, int nv, int c0, int cols, int32_t* dots) {
  for (int j = 0; j < nv; ++j) {
    const int8_t* x = a.xq.data() + static_cast<size_t>(m0 + j) * cols;
    int32_t acc = dots[j];
    for (int c = c0; c < cols; ++c) acc += static_cast<int32_t>(q[c]) * x[c];
    dots[j] = acc;
  }
}

__attribute__((target("avx2"))) inline int32_t hsum_epi32(__m256i v) {
  __m128i h = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
  return _mm_cvtsi128_si32(h);
}

// AVX2 (no integer dot-product instruction): |xq| (u8) x q * sign(xq) (s8)
// with vpmaddubsw, whose 16-bit pair sums cannot saturate since |xq|, |q| <=
// 127 (2 * 127 * 127 < 32767), then vpmaddwd against ones into int32.
__attribute__((target("avx2"))) void int_dots_avx2(const int8_t* q, const QuantRows& a, int m0, int nv, int cols,
                                                   int32_t* dots) {
  __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
  const __m256i ones = _mm256_set1_epi16(1);
  int c = 0;
  for (; c + 32 <= cols; c += 32) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + c));
    for (int j = 0; j < nv; ++j) {
      const size_t at = static_cast<size_t>(m0 + j) * cols + c;
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.xq.data() + at));
      const __m256i ax = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.abs.data() + at));
      const __m256i p = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(w, x));
      acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(p, ones));
    }
  }
  for (int j = 0; j < nv; ++j) dots[j] = hsum_epi32(acc[j]);
  int_dots_portable(q, a, m0, nv, c, cols, dots);
}

// AVX-512 VNNI: vpdpbusd sums four u8 x s8 products into int32 without
// saturation; the unsigned operand is xq + 128, so each sum is corrected by
// 128 * sum_c q[c] (accumulated alongside by the same instruction against 1s).
__attribute__((target("avx512f,avx512vnni"))) void int_dots_vnni(const int8_t* q, const QuantRows& a, int m0, int nv,
                                                                 int cols, int32_t* dots) {
  __m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
  __m512i qsum = _mm512_setzero_si512();
  const __m512i ones = _mm512_set1_epi8(1);
  int c = 0;
  for (; c + 64 <= cols; c += 64) {
    const __m512i w = _mm512_loadu_si512(q + c);
    qsum = _mm512_dpbusd_epi32(qsum, ones, w);
    for (int j = 0; j < nv; ++j)
      acc[j] = _mm512_dpbusd_epi32(acc[j], _mm512_loadu_si512(a.biased.data() + static_cast<size_t>(m0 + j) * cols + c),
                                   w);
  }
  const int32_t correction = 128 * _mm512_reduce_add_epi32(qsum);
  for (int j = 0; j < nv; ++j) dots[j] = _mm512_reduce_add_epi32(acc[j]) - correction;
  int_dots_portable(q, a, m0, nv, c, cols, dots);
}

enum class IntDotPath { kPortable, kAvx2, kVnni };
IntDotPath int_dot_path() {
  switch (dot_path()) {
    case DotPath::kAvx512:
      return cpu_features().avx512_vnni ? IntDotPath::kVnni : IntDotPath::kAvx2;
    case DotPath::kAvx2:
      return IntDotPath::kAvx2;
    case DotPath::kPortable:
      break;
  }
  return IntDotPath::kPortable;
}

}  // namespace

void gemv_int8_reference(const int8_t* q, const float* scale, int rows, int cols, const float* x, float* y,
                         float beta) {
  rows_product(DotPath::kPortable, 1, x, static_cast<size_t>(cols), q, static_cast<size_t>(cols), scale, rows, cols,
               y, static_cast<size_t>(rows), 1.0f, beta);
}

void gemv_int8(const int8_t* q, const float* scale, int rows, int cols, const float* x, float* y, float beta) {
  rows_product(dot_path(), 1, x, static_cast<size_t>(cols), q, static_cast<size_t>(cols), scale, rows, cols, y,
               static_cast<size_t>(rows), 1.0f, beta);
}

void gemm_rows_int8(int M, const float* X, size_t ldx, const int8_t* q, const float* scale, int rows, int cols,
                    float* Y, size_t ldy, float beta) {
  rows_product(dot_path(), M, X, ldx, q, static_cast<size_t>(cols), scale, rows, cols, Y, ldy, 1.0f, beta);
}

void gemm_rows_bf16(int M, const float* X, size_t ldx, const bf16* W, int rows, int cols, float* Y, size_t ldy,
                    float beta) {
  rows_product(dot_path(), M, X, ldx, W, static_cast<size_t>(cols), nullptr, rows, cols, Y, ldy, 1.0f, beta);
}

void gemm_rows_bf16_reference(int M, const float* X, size_t ldx, const bf16* W, int rows, int cols, float* Y,
                              size_t ldy, float beta) {
  rows_product(DotPath::kPortable, M, X, ldx, W, static_cast<size_t>(cols), nullptr, rows, cols, Y, ldy, 1.0f,
               beta);
}

void gemm_rows_f32(int M, const float* X, size_t ldx, const float* W, size_t ldw, int rows, int cols, float* Y,
                   size_t ldy, float alpha, float beta) {
  rows_product(dot_path(), M, X, ldx, W, ldw, nullptr, rows, cols, Y, ldy, alpha, beta);
}

void gemv_f32(const float* W, size_t ldw, int rows, int cols, const float* x, float* y, float alpha, float beta) {
  gemm_rows_f32(1, x, static_cast<size_t>(cols), W, ldw, rows, cols, y, static_cast<size_t>(rows), alpha, beta);
}

void gemm_rows_w8a8(int M, const float* X, size_t ldx, const int8_t* q, const float* scale, int rows, int cols,
                    float* Y, size_t ldy, float beta) {
  CHORUS_CHECK(M >= 0 && rows >= 0 && cols >= 0 &&
                   (M <= 1 || (ldx >= static_cast<size_t>(cols) && ldy >= static_cast<size_t>(rows))),
               "gemm_rows_w8a8: bad shape M %d rows %d cols %d ldx %zu ldy %zu", M, rows, cols, ldx, ldy);
  // The calling thread's buffers, shared read-only by the team below (a
  // thread_local named inside the parallel region would be each thread's own).
  thread_local QuantRows codes;
  QuantRows& a = codes;
  quantize_activation_rows(X, ldx, M, cols, a);
  const IntDotPath path = int_dot_path();
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && static_cast<size_t>(rows) * cols > (1u << 16))
  for (int r = 0; r < rows; ++r) {
    const int8_t* w = q + static_cast<size_t>(r) * cols;
    for (int m0 = 0; m0 < M; m0 += 4) {
      const int nv = std::min(4, M - m0);
      int32_t dots[4] = {0, 0, 0, 0};
      switch (path) {
        case IntDotPath::kVnni: int_dots_vnni(w, a, m0, nv, cols, dots); break;
        case IntDotPath::kAvx2: int_dots_avx2(w, a, m0, nv, cols, dots); break;
        case IntDotPath::kPortable: int_dots_portable(w, a, m0, nv, 0, cols, dots); break;
      }
      for (int j = 0; j < nv; ++j) {
        float* y = Y + static_cast<size_t>(m0 + j) * ldy + r;
        const float v = (a.sx[m0 + j] * scale[r]) * static_cast<float>(dots[j]);
        *y = beta == 0.0f ? v : beta * *y + v;
      }
    }
  }
}

const char* gemm_w8a8_path() {
  switch (int_dot_path()) {
    case IntDotPath::kVnni: return "avx512_vnni";
    case IntDotPath::kAvx2: return "avx2";
    case IntDotPath::kPortable: break;
  }
  return "portable";
}

const char* gemv_int8_path() {
  switch (dot_path()) {
    case DotPath::kAvx512: return "avx512";
    case DotPath::kAvx2: return "avx2";
    case DotPath::kPortable: break;
  }
  return "portable";
}

bool set_gemv_path(const char* path) {
  if (path == nullptr) {
    g_forced_path = -1;
    return true;
  }
  const std::string p = path;
  const CpuFeatures& f = cpu_features();
  DotPath want;
  if (p == "portable")
    want = DotPath::kPortable;
  else if (p == "avx2" && f.avx2 && f.fma)
    want = DotPath::kAvx2;
  else if (p == "avx512" && f.avx512f)
    want = DotPath::kAvx512;
  else
    return false;
  g_forced_path = static_cast<int>(want);
  return true;
}

}  // namespace chorus::backend::cpu
