#include "backend/cpu/ops.h"

#include "backend/cpu/gemv.h"

#include <cblas.h>
#include <omp.h>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define CHORUS_HAS_MXCSR 1
#endif

#include <algorithm>
#include <cstring>

namespace chorus::backend::cpu {

namespace {

constexpr int kSmallM = 8;  // rows up to which gemm_rows_f32 beats packing the weight (beam widths)

// Below this many elements a loop runs on the calling thread: an OpenMP fork
// costs a few microseconds, about what one core needs for ~50K floats.
constexpr size_t kParallelMin = 1 << 15;

}  // namespace

void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // BLAS would only scale C; keep "beta == 0 overwrites" exact
    for (int i = 0; i < M; ++i) {
      float* c = C + static_cast<size_t>(i) * ldc;
      for (int j = 0; j < N; ++j) c[j] = beta == 0.0f ? 0.0f : beta * c[j];
    }
    return;
  }
  // Our own loops (backend/cpu/gemv.h) where the rows of A and of B stored
  // (N, K) are contiguous: one token or a beam of up to kSmallM tokens times a
  // weight (every weight row read once, nothing packed; OpenBLAS 0.3.21's sgemv
  // was 3-6x slower on the decode shapes, its sgemm packs the whole weight), and
  // a matrix times one vector into a dense (M, 1) result. Neither reads C when
  // beta == 0.
  if (!trans_a && trans_b && M <= kSmallM) return gemm_rows_f32(M, A, lda, B, ldb, N, K, C, ldc, alpha, beta);
  if (N == 1 && !trans_a && trans_b && ldc == 1) return gemv_f32(A, lda, M, K, B, C, alpha, beta);
  if (M == 1 || N == 1) {
    // The other matrix-vector layouts go to sgemv, not sgemm (which packs the
    // whole weight on every call: a 51865-token LM head was 5x slower).
    if (beta == 0.0f) {  // "beta == 0 overwrites", whatever gemv's scal does with NaN
      for (int i = 0; i < M; ++i) std::memset(C + static_cast<size_t>(i) * ldc, 0, N * sizeof(float));
    }
    if (M == 1) {  // c (1, N) = a (1, K) op(B): y = op(B)^T a, B stored (N, K) if trans_b else (K, N)
      const int inc_a = trans_a ? lda : 1;
      if (trans_b) cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, alpha, B, ldb, A, inc_a, beta, C, 1);
      else cblas_sgemv(CblasRowMajor, CblasTrans, K, N, alpha, B, ldb, A, inc_a, beta, C, 1);
    } else {  // c (M, 1) = op(A) b (K, 1): A stored (K, M) if trans_a else (M, K)
      const int inc_b = trans_b ? 1 : ldb;
      if (trans_a) cblas_sgemv(CblasRowMajor, CblasTrans, K, M, alpha, A, lda, B, inc_b, beta, C, ldc);
      else cblas_sgemv(CblasRowMajor, CblasNoTrans, M, K, alpha, A, lda, B, inc_b, beta, C, ldc);
    }
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N,
              K, alpha, A, lda, B, ldb, beta, C, ldc);
}

int n_threads() { return omp_get_max_threads(); }

void set_n_threads(int n) {
  n = std::max(1, n);
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

namespace {
#if CHORUS_HAS_MXCSR
constexpr unsigned kFtzDaz = 0x8040u;  // MXCSR bit 15 flush-to-zero, bit 6 denormals-are-zero
void set_mxcsr_flush(bool on) { _mm_setcsr(on ? (_mm_getcsr() | kFtzDaz) : (_mm_getcsr() & ~kFtzDaz)); }
#endif
}  // namespace

bool set_flush_denormals(bool on) {
#if CHORUS_HAS_MXCSR
  set_mxcsr_flush(on);
#pragma omp parallel
  set_mxcsr_flush(on);
  return true;
#else
  (void)on;
  return false;
#endif
}

bool denormals_flushed() {
#if CHORUS_HAS_MXCSR
  return (_mm_getcsr() & kFtzDaz) == kFtzDaz;
#else
  return false;
#endif
}

SerialBlasScope::SerialBlasScope() {
  // openblas_get_parallel(): 0 sequential, 1 pthreads, 2 OpenMP.
  if (openblas_get_parallel() == 1 && openblas_get_num_threads() > 1) {
    saved_ = openblas_get_num_threads();
    openblas_set_num_threads(1);
  }
}

SerialBlasScope::~SerialBlasScope() {
  if (saved_ > 0) openblas_set_num_threads(saved_);
}

void fill(float* x, float value, size_t n) {
  const long nn = static_cast<long>(n);
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (long i = 0; i < nn; ++i) x[i] = value;
}

void copy(float* dst, const float* src, size_t n) {
  if (dst == src || n == 0) return;
  if (n <= kParallelMin) {
    std::memcpy(dst, src, n * sizeof(float));
    return;
  }
  const long nn = static_cast<long>(n);
#pragma omp parallel for simd schedule(static)
  for (long i = 0; i < nn; ++i) dst[i] = src[i];
}

void add(float* out, const float* a, const float* b, size_t n) {
  const long nn = static_cast<long>(n);
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (long i = 0; i < nn; ++i) out[i] = a[i] + b[i];
}

void axpy(float* out, float alpha, const float* x, size_t n) {
  const long nn = static_cast<long>(n);
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (long i = 0; i < nn; ++i) out[i] += alpha * x[i];
}

template <typename T>
void add_row_broadcast(float* out, const std::type_identity_t<T>* base, const T* row, int n_rows, int n_cols) {
  const size_t total = static_cast<size_t>(n_rows) * n_cols;
#pragma omp parallel for schedule(static) if (total > kParallelMin)
  for (int r = 0; r < n_rows; ++r) {
    float* o = out + static_cast<size_t>(r) * n_cols;
    const T* b = base ? base + static_cast<size_t>(r) * n_cols : nullptr;
    if (b && row) {
#pragma omp simd
      for (int c = 0; c < n_cols; ++c) o[c] = to_f32(b[c]) + to_f32(row[c]);
    } else if (b) {
      convert_serial(o, b, n_cols);  // a no-op for float when out aliases base
    } else if (row) {
      convert_serial(o, row, n_cols);
    } else {
      std::memset(o, 0, n_cols * sizeof(float));
    }
  }
}

template <typename T>
void col_sum_accumulate(float* out, const T* in, int n_rows, int n_cols) {
  // Column blocks of 64 floats (4 cache lines): no two threads write one line.
  constexpr int kBlock = 64;
  const int n_blocks = (n_cols + kBlock - 1) / kBlock;
  const size_t total = static_cast<size_t>(n_rows) * n_cols;
#pragma omp parallel for schedule(static) if (total > kParallelMin && n_blocks > 1)
  for (int blk = 0; blk < n_blocks; ++blk) {
    const int c0 = blk * kBlock;
    const int nc = std::min(kBlock, n_cols - c0);
    float acc[kBlock] = {};
    for (int r = 0; r < n_rows; ++r) {
      const T* x = in + static_cast<size_t>(r) * n_cols + c0;
#pragma omp simd
      for (int c = 0; c < nc; ++c) acc[c] += to_f32(x[c]);
    }
    for (int c = 0; c < nc; ++c) out[c0 + c] += acc[c];
  }
}

#define CHORUS_INSTANTIATE(T)                                                          \
  template void add_row_broadcast<T>(float*, const T*, const T*, int, int);            \
  template void col_sum_accumulate<T>(float*, const T*, int, int);
CHORUS_INSTANTIATE(float)
CHORUS_INSTANTIATE(bf16)
CHORUS_INSTANTIATE(fp16)
#undef CHORUS_INSTANTIATE

double sum_double(const float* x, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; ++i) s += x[i];
  return s;
}

}  // namespace chorus::backend::cpu
