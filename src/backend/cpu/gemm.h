// TEMPORARY stand-in (convert path only) until the dispatching GEMM lands.
#pragma once
#include <string>
#include "core/dtype.h"
namespace chorus::backend::cpu {
template <typename T>
void gemm_mixed(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const T* A, int lda, const T* B,
                int ldb, float beta, float* C, int ldc);
std::string gemm_describe();
}
