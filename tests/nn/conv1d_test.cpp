#include "nn/conv1d.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "grad_check.h"

namespace chorus::nn {
namespace {

using chorus::testing::expect_grad_close;
using chorus::testing::random_vector;
using chorus::testing::weighted_sum;

struct ConvCase {
  int B, Tin, Cin, Cout, K, stride, pad;
  int Tout() const { return conv1d_out_len(Tin, K, stride, pad); }
  size_t n_in() const { return static_cast<size_t>(B) * Tin * Cin; }
  size_t n_out() const { return static_cast<size_t>(B) * Tout() * Cout; }
  size_t n_w() const { return static_cast<size_t>(Cout) * Cin * K; }
};

// The definition, in double: out[b, to, co] = bias[co] + sum_{ci, k} w[co, ci, k] in[b, to*s - pad + k, ci].
std::vector<double> naive_conv(const ConvCase& c, const std::vector<float>& in, const std::vector<float>& w,
                               const float* bias) {
  const int Tout = c.Tout();
  std::vector<double> out(c.n_out());
  for (int b = 0; b < c.B; ++b)
    for (int to = 0; to < Tout; ++to)
      for (int co = 0; co < c.Cout; ++co) {
        double s = bias ? bias[co] : 0.0;
        for (int ci = 0; ci < c.Cin; ++ci)
          for (int k = 0; k < c.K; ++k) {
            const int ti = to * c.stride - c.pad + k;
            if (ti >= 0 && ti < c.Tin)
              s += static_cast<double>(w[(static_cast<size_t>(co) * c.Cin + ci) * c.K + k]) *
                   in[(static_cast<size_t>(b) * c.Tin + ti) * c.Cin + ci];
          }
        out[(static_cast<size_t>(b) * Tout + to) * c.Cout + co] = s;
      }
  return out;
}

TEST(Conv1d, OutputLength) {
  EXPECT_EQ(conv1d_out_len(3000, 3, 1, 1), 3000);  // Whisper conv1
  EXPECT_EQ(conv1d_out_len(3000, 3, 2, 1), 1500);  // Whisper conv2
  EXPECT_EQ(conv1d_out_len(9, 3, 2, 1), 5);
  EXPECT_EQ(conv1d_out_len(4, 5, 1, 1), 2);
  EXPECT_EQ(conv1d_out_len(7, 1, 1, 0), 7);
}

void check_forward(const ConvCase& c, bool with_bias) {
  const auto in = random_vector(c.n_in(), 1), w = random_vector(c.n_w(), 2, 0.5f),
             b = random_vector(c.Cout, 3);
  std::vector<float> out(c.n_out(), NAN);
  conv1d_forward(out.data(), in.data(), w.data(), with_bias ? b.data() : nullptr, c.B, c.Tin, c.Cin, c.Cout,
                 c.K, c.stride, c.pad);
  const auto ref = naive_conv(c, in, w, with_bias ? b.data() : nullptr);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 1e-5 * (1 + std::abs(ref[i]))) << i;
}

TEST(Conv1d, ForwardMatchesNaive) {
  check_forward({2, 9, 3, 4, 3, 1, 1}, true);
  check_forward({2, 9, 3, 4, 3, 2, 1}, true);
  check_forward({2, 10, 3, 4, 3, 2, 1}, false);
  check_forward({1, 7, 5, 2, 2, 3, 0}, true);  // stride > K: some inputs unused
  check_forward({3, 6, 4, 5, 1, 1, 0}, true);  // pointwise: no im2col
  check_forward({1, 4, 2, 3, 5, 1, 2}, true);  // kernel wider than the input
}

// Several im2col tiles (kConv1dTileElems / (Cin*K) rows each), one tile
// boundary inside an item.
TEST(Conv1d, ManyTilesMatchNaive) {
  const ConvCase c{3, 9000, 128, 6, 3, 1, 1};
  ASSERT_GT(c.n_out() / c.Cout * c.Cin * c.K, 2 * kConv1dTileElems);
  check_forward(c, true);
  const auto in = random_vector(c.n_in(), 4), w = random_vector(c.n_w(), 5, 0.5f);
  const auto dout = random_vector(c.n_out(), 6);
  std::vector<float> din(c.n_in(), NAN), dw(c.n_w(), 0.0f), db(c.Cout, 0.0f);
  conv1d_backward(din.data(), dw.data(), db.data(), dout.data(), in.data(), w.data(), c.B, c.Tin, c.Cin,
                  c.Cout, c.K, c.stride, c.pad);
  // din = transpose of the forward map, dw = correlation of dout with in: both in double.
  const int Tout = c.Tout();
  std::vector<double> din_ref(c.n_in(), 0.0), dw_ref(c.n_w(), 0.0);
  for (int b = 0; b < c.B; ++b)
    for (int to = 0; to < Tout; ++to)
      for (int k = 0; k < c.K; ++k) {
        const int ti = to * c.stride - c.pad + k;
        if (ti < 0 || ti >= c.Tin) continue;
        for (int co = 0; co < c.Cout; ++co) {
          const double g = dout[(static_cast<size_t>(b) * Tout + to) * c.Cout + co];
          for (int ci = 0; ci < c.Cin; ++ci) {
            const size_t wi = (static_cast<size_t>(co) * c.Cin + ci) * c.K + k;
            const size_t xi = (static_cast<size_t>(b) * c.Tin + ti) * c.Cin + ci;
            din_ref[xi] += g * w[wi];
            dw_ref[wi] += g * in[xi];
          }
        }
      }
  for (size_t i = 0; i < din.size(); ++i) ASSERT_NEAR(din[i], din_ref[i], 1e-4) << "din " << i;
  for (size_t i = 0; i < dw.size(); ++i)
    ASSERT_NEAR(dw[i], dw_ref[i], 2e-5 * (100 + std::abs(dw_ref[i]))) << i;
}

void check_backward(const ConvCase& c) {
  auto in = random_vector(c.n_in(), 11), w = random_vector(c.n_w(), 12, 0.5f), b = random_vector(c.Cout, 13);
  const auto wout = random_vector(c.n_out(), 14);
  std::vector<float> out(c.n_out());
  auto loss = [&] {
    conv1d_forward(out.data(), in.data(), w.data(), b.data(), c.B, c.Tin, c.Cin, c.Cout, c.K, c.stride,
                   c.pad);
    return weighted_sum(out.data(), wout.data(), out.size());
  };
  std::vector<float> din(c.n_in(), NAN), dw(c.n_w(), 0.0f), db(c.Cout, 0.0f);
  conv1d_backward(din.data(), dw.data(), db.data(), wout.data(), in.data(), w.data(), c.B, c.Tin, c.Cin,
                  c.Cout, c.K, c.stride, c.pad);
  chorus::testing::GradCheckOptions opt;
  opt.eps = 1e-2;
  opt.atol = 1e-3;
  expect_grad_close("din", in.data(), din.data(), din.size(), loss, opt);
  expect_grad_close("dw", w.data(), dw.data(), dw.size(), loss, opt);
  expect_grad_close("db", b.data(), db.data(), db.size(), loss, opt);

  // Parameter gradients accumulate; din may be skipped.
  std::vector<float> dw2(c.n_w(), 1.0f), db2(c.Cout, -2.0f);
  for (int rep = 0; rep < 2; ++rep)
    conv1d_backward<float>(nullptr, dw2.data(), db2.data(), wout.data(), in.data(), w.data(), c.B, c.Tin,
                           c.Cin, c.Cout, c.K, c.stride, c.pad);
  for (size_t i = 0; i < dw.size(); ++i) ASSERT_NEAR(dw2[i], 1.0f + 2.0f * dw[i], 1e-5) << "dw accumulates";
  for (int i = 0; i < c.Cout; ++i) ASSERT_NEAR(db2[i], -2.0f + 2.0f * db[i], 1e-5) << "db accumulates";
}

TEST(Conv1d, BackwardStride1MatchesFiniteDifferences) { check_backward({2, 9, 3, 4, 3, 1, 1}); }
TEST(Conv1d, BackwardStride2MatchesFiniteDifferences) { check_backward({2, 10, 3, 4, 3, 2, 1}); }
TEST(Conv1d, BackwardStrideAboveKernelMatchesFiniteDifferences) { check_backward({1, 8, 3, 2, 2, 3, 0}); }
TEST(Conv1d, BackwardPointwiseMatchesFiniteDifferences) { check_backward({2, 5, 4, 3, 1, 1, 0}); }

TEST(Conv1d, RejectsBadShapes) {
  EXPECT_THROW(conv1d_out_len(2, 5, 1, 1), Error);
  EXPECT_THROW(conv1d_out_len(10, 3, 0, 1), Error);
  std::vector<float> x(64);
  EXPECT_THROW(conv1d_forward<float>(x.data(), x.data(), x.data(), nullptr, 1, 4, 2, 2, 3, 1, -1), Error);
}

}  // namespace
}  // namespace chorus::nn
