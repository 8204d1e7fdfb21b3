// Mixed-precision GEMM for the CPU backend: A and B stored in bf16 or fp16,
// products accumulated and C stored in fp32, with the implementation chosen at
// run time from what this CPU and this build can do.
//
// Paths (GemmPath):
//   convert  "convert+sgemm": converts the op(A)/op(B) panels to fp32 in
//            per-thread scratch and calls cblas_sgemm. Runs everywhere.
//   sbgemm   "openblas-sbgemm": OpenBLAS cblas_sbgemm, bf16 only. Looked up at
//            run time, since only OpenBLAS builds made with BUILD_BFLOAT16
//            export it (Debian 12's 0.3.21 does not). Fast only where the CPU
//            has avx512_bf16 (OpenBLAS's Cooperlake kernels).
//   dnnl     "onednn": a oneDNN matmul primitive (bf16 or f16 sources, f32
//            destination), cached per shape. Needs oneDNN at build time
//            (CHORUS_DNNL) and, in oneDNN 2.6, AVX-512 for either dtype.
//   automatic picks per dtype: oneDNN when the CPU has the matching units
//            (avx512_bf16 / amx_bf16 for bf16, avx512_fp16 / amx_fp16 for fp16)
//            and oneDNN picks an optimised (non-"ref") implementation; else, for
//            bf16, sbgemm when the CPU has avx512_bf16 and OpenBLAS exports it;
//            else convert.
// fp32 operands always go straight to gemm() in ops.h; the path setting
// applies to the 16-bit dtypes only.
//
// Threading: like gemm(), a call from the main thread uses the OpenMP team and
// a call from inside an OpenMP parallel region runs on the calling thread
// (OpenBLAS and oneDNN both use the same libgomp runtime as our loops; see
// gemm.cpp). All functions are safe to call concurrently from several threads,
// except set_gemm_path, which should be called while no GEMM is running.
#pragma once

#include <cstddef>
#include <string>

#include "core/dtype.h"

namespace chorus::backend::cpu {

// CPU features relevant to GEMM paths, read with cpuid at run time (not from
// compile flags: binaries move between CPU models). A feature counts only when
// the OS also saves its register state (XCR0).
struct CpuFeatures {
  bool avx2, fma, f16c, avx512f, avx512_bf16, avx512_fp16, avx512_vnni, amx_bf16, amx_fp16, amx_int8;
};
const CpuFeatures& cpu_features();
// The model name from /proc/cpuinfo and the features present, e.g.
// "AMD EPYC (avx2 f16c)" or "Intel(R) Xeon(R) ... (avx2 f16c avx512f avx512_bf16 amx_bf16)".
std::string cpu_features_string();

enum class GemmPath { automatic, dnnl, sbgemm, convert };
// "auto", "onednn", "openblas-sbgemm", "convert+sgemm".
const char* gemm_path_name(GemmPath p);
// "auto" | "onednn" | "sbgemm" | "convert" (the names gemm_path_name returns
// are accepted too); throws chorus::Error naming the value otherwise.
GemmPath parse_gemm_path(const std::string& s);
// Forces a path for all later calls (tests, benchmarks); automatic = choose per
// dtype. Until the first call, the setting comes from the environment variable
// CHORUS_GEMM when set (read once; a bad value throws at the first GEMM).
void set_gemm_path(GemmPath p);
// The path gemm_mixed<T> uses now for storage dtype p (automatic resolved).
// A forced path that cannot run here (sbgemm for fp16, sbgemm without
// cblas_sbgemm in the loaded OpenBLAS, onednn when not built or without a
// bf16/f16 matmul for this CPU) throws chorus::Error saying why. For fp32:
// always convert (plain sgemm), whatever is forced.
GemmPath gemm_path_for(Precision p);
// Whether path p can run on this machine and build for dtype (automatic and
// convert: always; for fp32 only those two).
bool gemm_path_available(GemmPath p, Precision dtype);
// One line: CPU features, whether oneDNN is built in, and for bf16 and fp16 the
// path in use (for onednn with the implementation oneDNN picked, e.g.
// "brg:avx512_core_amx"), or why a forced path cannot run.
std::string gemm_describe();

// C (M, N) fp32 = alpha * op(A) @ op(B) + beta * C, with A and B stored in T
// (float, bf16 or fp16) and products accumulated in fp32. Same conventions as
// gemm() in ops.h: row-major; op(A) is (M, K), A stored (M, K) with leading
// dimension lda or (K, M) when trans_a; op(B) is (K, N), B stored (K, N) with
// ldb or (N, K) when trans_b; beta == 0 overwrites C even if C holds NaN.
// T = float simply calls gemm(). Throws chorus::Error when the forced path
// cannot run (see gemm_path_for) or oneDNN refuses the shape.
template <typename T>
void gemm_mixed(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const T* A, int lda, const T* B,
                int ldb, float beta, float* C, int ldc);

namespace detail {
// For tests: runs the oneDNN wrapper (memory descriptors, strides, alpha, beta,
// primitive cache) on fp32 operands, so its argument handling can be checked on
// CPUs where oneDNN 2.6 has no bf16/f16 matmul. Throws chorus::Error when built
// without oneDNN. Returns the implementation name oneDNN picked.
std::string dnnl_gemm_f32(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                          int lda, const float* B, int ldb, float beta, float* C, int ldc);
// Number of oneDNN primitives in the cache (0 without oneDNN).
size_t dnnl_cache_size();
}  // namespace detail

}  // namespace chorus::backend::cpu
