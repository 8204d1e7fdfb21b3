// Weight-only int8 (backend/cpu/gemv.h): the per-row quantisation error bound,
// and the int8 matrix-vector product (both paths) against a double-precision
// product with the dequantised weights, every column tail and stride.
#include "backend/cpu/gemv.h"
#include "backend/cpu/gemm.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

using namespace chorus;
using namespace chorus::backend::cpu;

namespace {

// rows x cols in a buffer of row stride ld; row r scaled by 10^(r % 5 - 2), row 3 all zero.
std::vector<float> weights(int rows, int cols, size_t ld, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> W(rows * ld, std::numeric_limits<float>::quiet_NaN());  // padding must not be read
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) W[r * ld + c] = r == 3 ? 0.0f : n(g) * std::pow(10.0f, float(r % 5 - 2));
  return W;
}

// M vectors of cols values in [-1, 1], row stride ldx; the padding is NaN
// (must not be read).
std::vector<float> vectors(int M, int cols, size_t ldx, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> X(M * ldx, std::numeric_limits<float>::quiet_NaN());
  for (int m = 0; m < M; ++m)
    for (int c = 0; c < cols; ++c) X[m * ldx + c] = u(g);
  return X;
}

// An output Y (M, rows) of row stride ldy before a product: -7 everywhere
// (padding must stay so), NaN in place when beta == 0 (it must not be read).
std::vector<float> outputs(int M, int rows, size_t ldy, float beta) {
  std::vector<float> Y(M * ldy, -7.0f);
  if (beta == 0.0f)
    for (int m = 0; m < M; ++m)
      for (int r = 0; r < rows; ++r) Y[m * ldy + r] = std::numeric_limits<float>::quiet_NaN();
  return Y;
}

}  // namespace

TEST(Int8, QuantisedRowsAreWithinHalfAScale) {
  const int rows = 9, cols = 37;
  const size_t ld = 41;
  const auto W = weights(rows, cols, ld, 1);
  std::vector<int8_t> q(rows * cols);
  std::vector<float> s(rows), D(rows * cols);
  quantize_rows_int8(W.data(), rows, cols, ld, q.data(), s.data());
  dequantize_rows_int8(q.data(), s.data(), rows, cols, D.data());
  for (int r = 0; r < rows; ++r) {
    int amax = 0;
    for (int c = 0; c < cols; ++c) {
      const float w = W[r * ld + c], d = D[r * cols + c];
      EXPECT_LE(std::fabs(w - d), 0.5f * s[r] * (1 + 1e-5f)) << "row " << r << " col " << c;
      amax = std::max(amax, std::abs(int(q[r * cols + c])));
    }
    if (r == 3) {
      EXPECT_EQ(s[r], 0.0f);
      EXPECT_EQ(amax, 0);
    } else {
      EXPECT_EQ(amax, 127) << "row " << r << ": the largest weight maps to +-127";
    }
  }
}

TEST(Int8, GemvEqualsTheDequantisedProductOnEveryPath) {
  std::printf("[ int8    ] gemv_int8 path on this CPU: %s\n", gemv_int8_path());
  for (const char* path : {"portable", "avx2", "avx512"}) {
    if (!set_gemv_path(path)) {
      std::printf("[ int8    ] %s: not on this CPU\n", path);
      continue;
    }
    SCOPED_TRACE(path);
    for (int cols : {1, 15, 16, 17, 63, 64, 65, 100, 384}) {
      for (int rows : {1, 7, 300}) {
        const auto W = weights(rows, cols, cols, 7 + cols);
        std::vector<int8_t> q(rows * cols);
        std::vector<float> s(rows), D(rows * cols), x(cols);
        quantize_rows_int8(W.data(), rows, cols, cols, q.data(), s.data());
        dequantize_rows_int8(q.data(), s.data(), rows, cols, D.data());
        std::mt19937 g(cols * 31 + rows);
        std::uniform_real_distribution<float> u(-1.0f, 1.0f);
        for (float& v : x) v = u(g);
        for (float beta : {0.0f, 0.5f}) {
          std::vector<float> y_fast(rows, beta == 0 ? std::numeric_limits<float>::quiet_NaN() : 2.0f);
          std::vector<float> y_ref = y_fast;
          gemv_int8(q.data(), s.data(), rows, cols, x.data(), y_fast.data(), beta);
          gemv_int8_reference(q.data(), s.data(), rows, cols, x.data(), y_ref.data(), beta);
          for (int r = 0; r < rows; ++r) {
            double want = beta * 2.0, mag = std::fabs(beta * 2.0), orig = beta * 2.0, xsum = 0;
            for (int c = 0; c < cols; ++c) {
              want += double(D[r * cols + c]) * x[c];
              mag += std::fabs(double(D[r * cols + c]) * x[c]);
              orig += double(W[r * cols + c]) * x[c];
              xsum += std::fabs(x[c]);
            }
            const double tol = 1e-5 * mag + 1e-30;
            ASSERT_NEAR(y_fast[r], want, tol)
                << "fast: rows " << rows << " cols " << cols << " beta " << beta << " row " << r;
            ASSERT_NEAR(y_ref[r], want, tol)
                << "reference: rows " << rows << " cols " << cols << " row " << r;
            // Against the fp32 weights: at most half a scale per weight times |x|.
            ASSERT_LE(std::fabs(y_fast[r] - orig), 0.5 * s[r] * xsum * (1 + 1e-4) + tol) << "row " << r;
          }
        }
      }
    }
  }
  set_gemv_path(nullptr);
}

// gemm_rows_int8 (a beam of M vectors through one read of the codes, each row
// widened once) equals gemv_int8 on each vector on the same path (the same
// products; the compiler may contract the portable loops differently, so to
// 1e-6 of the sum of |terms|), with row strides and beta; the padding between
// rows of X and Y is neither read nor written.
TEST(Int8, GemmRowsEqualsGemvOfEachRowOnEveryPath) {
  for (const char* path : {"portable", "avx2", "avx512"}) {
    if (!set_gemv_path(path)) continue;
    SCOPED_TRACE(path);
    for (int M : {1, 3, 8}) {
      for (int cols : {5, 64, 100}) {
        const int rows = 37;
        const size_t ldx = cols + 3, ldy = rows + 2;
        const auto W = weights(rows, cols, cols, 11 + cols);
        std::vector<int8_t> q(rows * cols);
        std::vector<float> s(rows);
        quantize_rows_int8(W.data(), rows, cols, cols, q.data(), s.data());
        const auto X = vectors(M, cols, ldx, M * 100 + cols);
        for (float beta : {0.0f, 1.0f}) {
          std::vector<float> Y = outputs(M, rows, ldy, beta);
          const std::vector<float> Y0 = Y;
          gemm_rows_int8(M, X.data(), ldx, q.data(), s.data(), rows, cols, Y.data(), ldy, beta);
          for (int m = 0; m < M; ++m) {
            std::vector<float> y(Y0.begin() + m * ldy, Y0.begin() + m * ldy + rows);
            gemv_int8(q.data(), s.data(), rows, cols, X.data() + m * ldx, y.data(), beta);
            for (int r = 0; r < rows; ++r) {
              double mag = (beta == 0.0f ? 0.0 : std::fabs(beta * Y0[m * ldy + r])) + 1e-30;
              for (int c = 0; c < cols; ++c) mag += std::fabs(s[r] * q[r * cols + c] * X[m * ldx + c]);
              ASSERT_NEAR(Y[m * ldy + r], y[r], 1e-6 * mag)
                  << "M " << M << " cols " << cols << " beta " << beta << " m " << m << " r " << r;
            }
            for (size_t r = rows; r < ldy && m + 1 < M; ++r) ASSERT_EQ(Y[m * ldy + r], -7.0f) << "padding written";
          }
        }
      }
    }
  }
  set_gemv_path(nullptr);
}

// Weight-only bf16 (gemm_rows_bf16): every path, M = 1 (a decode step at batch
// 1) and several vectors (a beam), every column tail, row strides and beta,
// against a double product with the widened bf16 weights; and the rounding
// against the fp32 weights: at most 2^-8 relative per weight (8 significant bits).
TEST(Bf16, GemmRowsEqualsTheWidenedProductOnEveryPath) {
  for (const char* path : {"portable", "avx2", "avx512"}) {
    if (!set_gemv_path(path)) continue;
    SCOPED_TRACE(path);
    for (int M : {1, 3, 8}) {
      for (int cols : {1, 15, 16, 17, 63, 64, 65, 100, 384}) {
        const int rows = 37;
        const size_t ldx = cols + 3, ldy = rows + 2;
        const auto W = weights(rows, cols, cols, 5 + cols);
        std::vector<bf16> h(rows * cols);
        for (size_t i = 0; i < h.size(); ++i) h[i] = from_f32<bf16>(W[i]);
        const auto X = vectors(M, cols, ldx, M * 100 + cols);
        for (float beta : {0.0f, 1.0f}) {
          std::vector<float> Y = outputs(M, rows, ldy, beta);
          const std::vector<float> Y0 = Y;
          std::vector<float> Yref = Y;
          gemm_rows_bf16(M, X.data(), ldx, h.data(), rows, cols, Y.data(), ldy, beta);
          gemm_rows_bf16_reference(M, X.data(), ldx, h.data(), rows, cols, Yref.data(), ldy, beta);
          for (int m = 0; m < M; ++m) {
            for (int r = 0; r < rows; ++r) {
              const double y0 = beta == 0.0f ? 0.0 : double(beta) * Y0[m * ldy + r];
              double want = y0, mag = std::fabs(y0) + 1e-30, orig = y0, bound = 0;
              for (int c = 0; c < cols; ++c) {
                const double w = to_f32(h[r * cols + c]), x = X[m * ldx + c];
                want += w * x;
                mag += std::fabs(w * x);
                orig += double(W[r * cols + c]) * x;
                bound += std::fabs(double(W[r * cols + c]) * x) * std::ldexp(1.0, -8);
              }
              ASSERT_NEAR(Y[m * ldy + r], want, 1e-5 * mag) << "M " << M << " cols " << cols << " m " << m << " r " << r;
              ASSERT_NEAR(Yref[m * ldy + r], want, 1e-5 * mag) << "reference, M " << M << " cols " << cols;
              ASSERT_LE(std::fabs(Y[m * ldy + r] - orig), bound + 1e-5 * mag) << "rounding bound, r " << r;
            }
            for (size_t r = rows; r < ldy && m + 1 < M; ++r) ASSERT_EQ(Y[m * ldy + r], -7.0f) << "padding written";
          }
        }
      }
    }
  }
  set_gemv_path(nullptr);
}

// int8 activations x int8 weights (gemm_rows_w8a8): the integer sums are
// exact, so every path (portable, AVX2 vpmaddubsw, AVX-512 VNNI where the CPU
// has it) gives the portable loop's bits; that loop equals a double product of
// the codes quantised here independently; and the result is within the two
// quantisations' error of the fp32 product. Column tails around the 32 / 64
// byte vectors, strides, beta, a zero vector and a zero weight row.
TEST(W8a8, EveryPathGivesThePortableBitsAndTheQuantisedProduct) {
  std::printf("[ w8a8    ] gemm_rows_w8a8 path on this CPU: %s\n", gemm_w8a8_path());
  std::vector<std::string> ran;
  omp_set_num_threads(2);  // 300 x 384 and up run on an OpenMP team (the codes are the caller's)
  for (int M : {1, 2, 5, 9}) {
    for (int cols : {1, 31, 32, 33, 63, 64, 65, 100, 384, 1536}) {
      const int rows = cols >= 384 ? 300 : 21;
      const size_t ldx = cols + 3, ldy = rows + 2;
      const auto W = weights(rows, cols, cols, 17 + cols);  // row 3 is zero
      std::vector<int8_t> q(rows * cols);
      std::vector<float> s(rows);
      quantize_rows_int8(W.data(), rows, cols, cols, q.data(), s.data());
      auto X = vectors(M, cols, ldx, M * 7 + cols);
      if (M > 1)
        for (int c = 0; c < cols; ++c) X[1 * ldx + c] = 0.0f;  // a zero vector: scale 0, output 0
      for (float beta : {0.0f, 0.5f}) {
        set_gemv_path("portable");
        std::vector<float> Yp = outputs(M, rows, ldy, beta);
        const std::vector<float> Y0 = Yp;
        gemm_rows_w8a8(M, X.data(), ldx, q.data(), s.data(), rows, cols, Yp.data(), ldy, beta);
        for (const char* path : {"avx2", "avx512"}) {
          if (!set_gemv_path(path)) continue;
          if (M == 1 && cols == 1 && beta == 0.0f) ran.push_back(gemm_w8a8_path());
          std::vector<float> Y = Y0;
          gemm_rows_w8a8(M, X.data(), ldx, q.data(), s.data(), rows, cols, Y.data(), ldy, beta);
          for (size_t i = 0; i < Y.size(); ++i)
            ASSERT_EQ(std::bit_cast<uint32_t>(Y[i]), std::bit_cast<uint32_t>(Yp[i]))
                << gemm_w8a8_path() << " M " << M << " cols " << cols << " beta " << beta << " at " << i;
        }
        for (int m = 0; m < M; ++m) {
          const float* x = X.data() + m * ldx;
          float amax = 0;
          for (int c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(x[c]));
          const double sx = amax / 127.0f;
          for (int r = 0; r < rows; ++r) {
            double dot = 0, orig = 0, mag = 0;
            for (int c = 0; c < cols; ++c) {
              const double xq = sx > 0 ? std::nearbyint(x[c] / sx) : 0.0;
              dot += double(q[r * cols + c]) * xq;
              orig += double(W[r * cols + c]) * x[c];
              mag += std::fabs(double(W[r * cols + c]) * x[c]);
            }
            const double y0 = beta == 0.0f ? 0.0 : double(beta) * Y0[m * ldy + r];
            const double want = y0 + sx * s[r] * dot, got = Yp[m * ldy + r];
            ASSERT_NEAR(got, want, 1e-5 * (std::fabs(want) + std::fabs(y0)) + 1e-30) << "M " << M << " cols " << cols;
            // Each factor within half its scale (|dW| <= s/2, |dx| <= sx/2):
            // |W~x~ - Wx| <= s/2 sum |x| + sx/2 sum (|W| + s/2).
            double x_abs = 0, w_abs = 0;
            for (int c = 0; c < cols; ++c) {
              x_abs += std::fabs(x[c]);
              w_abs += std::fabs(W[r * cols + c]) + 0.5 * s[r];
            }
            ASSERT_LE(std::fabs(got - y0 - orig), 0.5 * s[r] * x_abs + 0.5 * sx * w_abs + 1e-5 * mag + 1e-30)
                << "quantisation bound, M " << M << " cols " << cols << " r " << r;
            if (m == 1 && M > 1) {
              ASSERT_EQ(got, y0) << "a zero vector";
            }
          }
        }
      }
    }
  }
  set_gemv_path(nullptr);
  for (const auto& p : ran) std::printf("[ w8a8    ] compared with the portable loop: %s\n", p.c_str());
  if (!cpu_features().avx512_vnni) std::printf("[ w8a8    ] avx512_vnni: not on this CPU, not run\n");
}

TEST(Int8, NonFiniteWeightsAreRefusedNamingTheRow) {
  std::vector<float> W(2 * 4, 1.0f);
  W[6] = std::numeric_limits<float>::infinity();
  std::vector<int8_t> q(8);
  std::vector<float> s(2);
  try {
    quantize_rows_int8(W.data(), 2, 4, 4, q.data(), s.data());
    FAIL() << "an Inf weight was quantised";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("row 1 column 2"), std::string::npos) << e.what();
  }
}
