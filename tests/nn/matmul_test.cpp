// Linear layer (matmul + bias) and the GEMM wrapper under it.
#include "nn/matmul.h"

#include <gtest/gtest.h>

#include "backend/cpu/gemv.h"

#include <cmath>
#include <limits>

#include "backend/cpu/ops.h"
#include "grad_check.h"

namespace chorus::nn {
namespace {

using chorus::testing::expect_grad_close;
using chorus::testing::random_vector;
using chorus::testing::weighted_sum;

// Every transpose and stride, for a full GEMM and for the matrix-vector shapes
// (M == 1, N == 1) that take the gemv path.
void check_gemm_shape(int M, int N, int K, int ldc_pad = 2) {
  SCOPED_TRACE(::testing::Message() << "M " << M << " N " << N << " K " << K << " ldc pad " << ldc_pad);
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {
      // Strided storage (leading dimensions larger than the logical width).
      const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + ldc_pad;
      auto A = random_vector(static_cast<size_t>(ta ? K : M) * lda, 1);
      auto B = random_vector(static_cast<size_t>(tb ? N : K) * ldb, 2);
      auto C = random_vector(static_cast<size_t>(M) * ldc, 3);
      auto C0 = C;
      const float alpha = 0.7f, beta = 0.3f;
      backend::cpu::gemm(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
      for (int i = 0; i < M; ++i) {
        for (int j = 0; j < N; ++j) {
          double s = 0.0;
          for (int k = 0; k < K; ++k) {
            const double a = ta ? A[k * lda + i] : A[i * lda + k];
            const double b = tb ? B[j * ldb + k] : B[k * ldb + j];
            s += a * b;
          }
          const double ref = alpha * s + beta * C0[i * ldc + j];
          EXPECT_NEAR(C[i * ldc + j], ref, 1e-5) << "ta " << ta << " tb " << tb << " at " << i << "," << j;
        }
        for (int j = N; j < ldc; ++j) EXPECT_EQ(C[i * ldc + j], C0[i * ldc + j]) << "padding touched";
      }
    }
  }
}

TEST(Gemm, AllTransposesMatchNaive) { check_gemm_shape(37, 29, 45); }

void check_matrix_vector_shapes() {
  check_gemm_shape(1, 29, 45);
  check_gemm_shape(37, 1, 45);
  check_gemm_shape(1, 1, 45);
  check_gemm_shape(1, 300, 7);
  // backend/cpu/gemv.h's own loop (contiguous rows and vector): every AVX-512
  // tail, and enough work for its OpenMP split; an (M, 1) result with ldc 1.
  check_gemm_shape(1, 700, 130);
  check_gemm_shape(700, 1, 130, 0);
  check_gemm_shape(5, 1, 17, 0);
  // A few rows (beam decoding): gemm_rows_f32 for M <= 8, sgemm above.
  check_gemm_shape(4, 700, 130);
  check_gemm_shape(8, 29, 45);
  check_gemm_shape(9, 29, 45);
}

TEST(Gemm, MatrixVectorShapesMatchNaive) {
  // On every dot-product path this CPU has (backend/cpu/gemv.h: portable, AVX2 + FMA, AVX-512).
  for (const char* path : {"portable", "avx2", "avx512"}) {
    if (!backend::cpu::set_gemv_path(path)) continue;
    SCOPED_TRACE(path);
    check_matrix_vector_shapes();
  }
  backend::cpu::set_gemv_path(nullptr);
}

TEST(Gemm, BetaZeroOverwritesNaN) {
  std::vector<float> A(6, 1.0f), B(6, 1.0f), C(4, std::numeric_limits<float>::quiet_NaN());
  backend::cpu::gemm(false, false, 2, 2, 3, 1.0f, A.data(), 3, B.data(), 2, 0.0f, C.data(), 2);
  for (float c : C) EXPECT_EQ(c, 3.0f);
  // The gemv shapes too (one row, one column).
  std::fill(C.begin(), C.end(), std::numeric_limits<float>::quiet_NaN());
  backend::cpu::gemm(false, true, 1, 2, 3, 1.0f, A.data(), 3, B.data(), 3, 0.0f, C.data(), 2);
  backend::cpu::gemm(false, false, 2, 1, 3, 1.0f, A.data(), 3, B.data(), 1, 0.0f, C.data() + 2, 1);
  for (float c : C) EXPECT_EQ(c, 3.0f);
}

TEST(Matmul, ForwardMatchesNaive) {
  const int N = 11, C = 19, OC = 13;
  auto inp = random_vector(N * C, 1), w = random_vector(OC * C, 2), b = random_vector(OC, 3),
       res = random_vector(N * OC, 4);
  std::vector<float> out(N * OC), out_res(N * OC), out_nobias(N * OC);
  matmul_forward(out.data(), inp.data(), w.data(), b.data(), N, C, OC);
  matmul_forward(out_res.data(), inp.data(), w.data(), b.data(), N, C, OC, res.data());
  matmul_forward(out_nobias.data(), inp.data(), w.data(), nullptr, N, C, OC);
  for (int n = 0; n < N; ++n) {
    for (int o = 0; o < OC; ++o) {
      double s = 0.0;
      for (int c = 0; c < C; ++c) s += static_cast<double>(inp[n * C + c]) * w[o * C + c];
      EXPECT_NEAR(out_nobias[n * OC + o], s, 1e-5);
      EXPECT_NEAR(out[n * OC + o], s + b[o], 1e-5);
      EXPECT_NEAR(out_res[n * OC + o], s + b[o] + res[n * OC + o], 1e-5);
    }
  }
  // In-place residual (out aliases residual), as the GPT decode step uses it.
  auto inplace = res;
  matmul_forward(inplace.data(), inp.data(), w.data(), b.data(), N, C, OC, inplace.data());
  for (int i = 0; i < N * OC; ++i) EXPECT_FLOAT_EQ(inplace[i], out_res[i]);
}

TEST(Matmul, BackwardMatchesFiniteDifferences) {
  const int N = 9, C = 14, OC = 10;
  auto inp = random_vector(N * C, 1), w = random_vector(OC * C, 2, 0.5f), b = random_vector(OC, 3);
  auto res = random_vector(N * OC, 4);
  auto wout = random_vector(N * OC, 5);  // loss = sum(out * wout)
  std::vector<float> out(N * OC);
  auto loss = [&] {
    matmul_forward(out.data(), inp.data(), w.data(), b.data(), N, C, OC, res.data());
    return weighted_sum(out.data(), wout.data(), out.size());
  };
  loss();
  // Overwrite rule for dinp (pre-filled with NaN), accumulate rule for dweight/dbias (pre-filled with 1).
  std::vector<float> dinp(N * C, std::numeric_limits<float>::quiet_NaN()), dw(OC * C, 1.0f), db(OC, 1.0f);
  matmul_backward(dinp.data(), dw.data(), db.data(), wout.data(), inp.data(), w.data(), N, C, OC);
  for (auto& g : dw) g -= 1.0f;
  for (auto& g : db) g -= 1.0f;
  expect_grad_close("dinp", inp.data(), dinp.data(), inp.size(), loss);
  expect_grad_close("dweight", w.data(), dw.data(), w.size(), loss);
  expect_grad_close("dbias", b.data(), db.data(), b.size(), loss);
  // The residual passes the gradient straight through: d/dres = wout.
  expect_grad_close("dresidual", res.data(), wout.data(), res.size(), loss);
}

TEST(Matmul, BackwardLargeMatchesNaive) {
  // Big enough for the parallel column-sum path (several 64-column blocks).
  const int N = 300, C = 40, OC = 200;
  auto inp = random_vector(N * C, 1), w = random_vector(OC * C, 2), dout = random_vector(N * OC, 3);
  std::vector<float> dinp(N * C), dw(OC * C, 0.0f), db(OC, 0.0f);
  matmul_backward(dinp.data(), dw.data(), db.data(), dout.data(), inp.data(), w.data(), N, C, OC);
  for (int o = 0; o < OC; ++o) {
    double s = 0.0;
    for (int n = 0; n < N; ++n) s += dout[n * OC + o];
    EXPECT_NEAR(db[o], s, 1e-4);
    for (int c = 0; c < C; c += 7) {
      double sw = 0.0;
      for (int n = 0; n < N; ++n) sw += static_cast<double>(dout[n * OC + o]) * inp[n * C + c];
      EXPECT_NEAR(dw[o * C + c], sw, 1e-4);
    }
  }
  for (int n = 0; n < N; n += 13) {
    for (int c = 0; c < C; ++c) {
      double s = 0.0;
      for (int o = 0; o < OC; ++o) s += static_cast<double>(dout[n * OC + o]) * w[o * C + c];
      EXPECT_NEAR(dinp[n * C + c], s, 1e-4);
    }
  }
}

}  // namespace
}  // namespace chorus::nn
