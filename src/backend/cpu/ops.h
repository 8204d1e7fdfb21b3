// CPU op layer: row-major GEMM over OpenBLAS (cblas_sgemm) and the OpenMP
// elementwise / reduction loops the nn layers share. All pointers are fp32 and
// row-major; shapes are given in the comments as (rows, cols).
//
// Threading: OpenBLAS is the OpenMP build, so a GEMM called from the main
// thread uses the whole OpenMP team, and a GEMM called inside an OpenMP
// parallel region runs single-threaded on the calling thread (OpenBLAS checks
// omp_in_parallel()). Layers rely on that to run many small GEMMs in parallel
// (one per (batch, head) in attention).
//
// Determinism: every loop here splits work by a fixed rule that does not
// depend on the thread count, so results are bit-identical run to run and
// across thread counts (GEMM excepted: OpenBLAS splits by thread count).
#pragma once

#include <cstddef>
#include <type_traits>

#include "core/dtype.h"

namespace chorus::backend::cpu {

// C (M, N) = alpha * op(A) @ op(B) + beta * C.
// op(A) is (M, K): A is stored (M, K) with leading dimension lda, or (K, M) when
// trans_a. op(B) is (K, N): B is stored (K, N) with ldb, or (N, K) when trans_b.
// Transposes are done by BLAS flags, never by copies. beta == 0 overwrites C
// (C may hold garbage, even NaN).
void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc);

// OpenMP team size used by our loops and by OpenBLAS.
int n_threads();
// Sets both the OpenMP team size and OpenBLAS's thread count (n >= 1).
void set_n_threads(int n);

// Subnormal floats (|x| < 2^-126) flushed to zero when produced (FTZ) and read
// as zero when consumed (DAZ), on the calling thread, on every thread of the
// OpenMP team, and on threads created after (Linux copies MXCSR into a new
// thread). Intel cores take a microcode assist for each subnormal operand or
// result, and training drifts into them (tiny probabilities and gradients):
// the speech recipe's CTC steps ran 3-4x slower on an AVX-512 Xeon until
// they were flushed (docs/DESIGN.md "Subnormals"). Every chorus process turns
// this on first thing (TensorFlow does the same on CPU). Returns false and
// does nothing on a CPU without SSE control (not x86).
bool set_flush_denormals(bool on);
// Whether the calling thread flushes subnormals.
bool denormals_flushed();

// Scope in which BLAS calls made from inside an OpenMP parallel region run
// single-threaded on the calling thread. The OpenMP build of OpenBLAS does this
// by itself; with a pthreads build (e.g. the system alternative picked at run
// time) the scope sets its thread count to 1 and restores it on exit, instead
// of letting every OpenMP thread start a BLAS thread team.
// Construct it outside the parallel region.
class SerialBlasScope {
 public:
  SerialBlasScope();
  ~SerialBlasScope();
  SerialBlasScope(const SerialBlasScope&) = delete;
  SerialBlasScope& operator=(const SerialBlasScope&) = delete;

 private:
  int saved_ = 0;  // thread count to restore; 0 = nothing to do
};

// x[i] = value, i < n.
void fill(float* x, float value, size_t n);
// dst[i] = src[i]; dst == src is a no-op.
void copy(float* dst, const float* src, size_t n);
// out[i] = a[i] + b[i]; out may alias a or b.
void add(float* out, const float* a, const float* b, size_t n);
// out[i] += alpha * x[i].
void axpy(float* out, float alpha, const float* x, size_t n);

// out (n_rows, n_cols) fp32 = base (n_rows, n_cols) + row (n_cols) broadcast
// over rows, summed in fp32; base and row are float, bf16 or fp16.
// base == nullptr means zeros, row == nullptr means zeros; out may alias base
// (float only).
template <typename T>
void add_row_broadcast(float* out, const std::type_identity_t<T>* base, const T* row, int n_rows, int n_cols);

// out (n_cols) += column sums of in (n_rows, n_cols) (float, bf16 or fp16),
// in fp32. Parallel over column blocks, each summed over rows in order
// (deterministic).
template <typename T>
void col_sum_accumulate(float* out, const T* in, int n_rows, int n_cols);

// Sum of x (n) in double, serial (deterministic). For small reductions such as
// the per-position losses.
double sum_double(const float* x, size_t n);

}  // namespace chorus::backend::cpu
