#include "backend/cpu/gemm.h"
#include <vector>
#include "backend/cpu/ops.h"
namespace chorus::backend::cpu {
namespace {
template <typename T>
const float* panel(const T* X, int rows, int cols, int ld, std::vector<float>& buf) {
  buf.resize(static_cast<size_t>(rows) * cols);
  for (int r = 0; r < rows; ++r) convert_serial(buf.data() + static_cast<size_t>(r) * cols, X + static_cast<size_t>(r) * ld, cols);
  return buf.data();
}
}
template <typename T>
void gemm_mixed(bool ta, bool tb, int M, int N, int K, float alpha, const T* A, int lda, const T* B, int ldb,
                float beta, float* C, int ldc) {
  if constexpr (std::is_same_v<T, float>) {
    gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    thread_local std::vector<float> a, b;
    const float* a32 = panel(A, ta ? K : M, ta ? M : K, lda, a);
    const float* b32 = panel(B, tb ? N : K, tb ? K : N, ldb, b);
    gemm(ta, tb, M, N, K, alpha, a32, ta ? M : K, b32, tb ? K : N, beta, C, ldc);
  }
}
template void gemm_mixed<float>(bool, bool, int, int, int, float, const float*, int, const float*, int, float, float*, int);
template void gemm_mixed<bf16>(bool, bool, int, int, int, float, const bf16*, int, const bf16*, int, float, float*, int);
template void gemm_mixed<fp16>(bool, bool, int, int, int, float, const fp16*, int, const fp16*, int, float, float*, int);
std::string gemm_describe() { return "convert+sgemm"; }
}
