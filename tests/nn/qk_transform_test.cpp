#include "nn/qk_transform.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "grad_check.h"
#include "mixed_check.h"
#include "nn/rmsnorm.h"

namespace chorus::nn {
namespace {

using namespace chorus::testing;  // grad_check.h, mixed_check.h

QkTransform make(bool qk_norm, bool rotary, float theta = 10000.0f) {
  QkTransform tf;
  tf.qk_norm = qk_norm;
  tf.rotary = rotary;
  tf.rope_theta = theta;
  return tf;
}

std::string label(const QkTransform& tf, int pos0) {
  return std::string(tf.qk_norm ? "qk_norm" : "") + (tf.qk_norm && tf.rotary ? "+" : "") +
         (tf.rotary ? "rotary" : "") + " pos0=" + std::to_string(pos0);
}

// Independent double-precision forward: per row and head, RMSNorm then RoPE
// with pairs (i, i + hs/2) and angle pos * theta^(-2i/hs).
std::vector<double> reference(const std::vector<float>& qkv, std::vector<double>* rstd, int B, int Tn, int C,
                              int NH, const QkTransform& tf, int pos0) {
  std::vector<double> out(qkv.begin(), qkv.end());
  const int hs = C / NH, half = hs / 2;
  if (rstd) rstd->assign(static_cast<size_t>(B) * Tn * 2 * NH, 0.0);
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < Tn; ++t) {
      const size_t row = static_cast<size_t>(b) * Tn + t;
      for (int j = 0; j < 2 * NH; ++j) {
        double* x = out.data() + row * 3 * C + static_cast<size_t>(j) * hs;
        if (tf.qk_norm) {
          double ss = 0.0;
          for (int i = 0; i < hs; ++i) ss += x[i] * x[i];
          const double r = 1.0 / std::sqrt(ss / hs + kRmsNormEps);
          for (int i = 0; i < hs; ++i) x[i] *= r;
          if (rstd) (*rstd)[row * 2 * NH + j] = r;
        }
        if (tf.rotary) {
          for (int i = 0; i < half; ++i) {
            const double a = (pos0 + t) * std::pow(static_cast<double>(tf.rope_theta), -2.0 * i / hs);
            const double x1 = x[i], x2 = x[i + half];
            x[i] = x1 * std::cos(a) - x2 * std::sin(a);
            x[i + half] = x1 * std::sin(a) + x2 * std::cos(a);
          }
        }
      }
    }
  }
  return out;
}

TEST(QkTransform, ForwardMatchesReference) {
  const int B = 2, Tn = 5, C = 16, NH = 2;
  const auto x = random_vector(B * Tn * 3 * C, 1, 2.0f);
  for (const auto& tf :
       {make(true, false), make(false, true), make(true, true), make(true, true, 500000.0f)}) {
    for (int pos0 : {0, 7, 8000}) {
      SCOPED_TRACE(label(tf, pos0));
      std::vector<float> y = x, rstd(B * Tn * 2 * NH, -1.0f);
      qk_transform_forward(y.data(), tf.qk_norm ? rstd.data() : nullptr, B, Tn, C, NH, tf, pos0);
      std::vector<double> ref_rstd;
      const auto ref = reference(x, &ref_rstd, B, Tn, C, NH, tf, pos0);
      for (size_t i = 0; i < y.size(); ++i) {
        if (static_cast<int>(i % (3 * C)) >= 2 * C) {
          ASSERT_EQ(y[i], x[i]) << "v column changed at " << i;
        } else {
          // cos / sin rounded to fp32 once: ~1e-7 relative to the head's size.
          EXPECT_NEAR(y[i], ref[i], 1e-6 * std::max(1.0, std::abs(ref[i]))) << i;
        }
      }
      if (tf.qk_norm) {
        for (size_t i = 0; i < rstd.size(); ++i) EXPECT_NEAR(rstd[i], ref_rstd[i], 1e-6 * ref_rstd[i]) << i;
      }
    }
  }
  // Nothing enabled: nothing changes.
  std::vector<float> y = x;
  qk_transform_forward(y.data(), nullptr, B, Tn, C, NH, QkTransform{});
  for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(y[i], x[i]);
}

TEST(QkTransform, RopeAtPositionZeroIsIdentity) {
  const int B = 3, Tn = 4, C = 24, NH = 3;
  const auto x = random_vector(B * Tn * 3 * C, 2);
  std::vector<float> y = x;
  qk_transform_forward(y.data(), nullptr, B, Tn, C, NH, make(false, true));
  for (int b = 0; b < B; ++b) {
    const size_t row = static_cast<size_t>(b) * Tn * 3 * C;  // t = 0
    for (int c = 0; c < 3 * C; ++c) ASSERT_EQ(y[row + c], x[row + c]) << "b " << b << " c " << c;
  }
}

TEST(QkTransform, RopePreservesHeadNorms) {
  const int B = 2, Tn = 9, C = 32, NH = 4, hs = C / NH;
  const auto x = random_vector(B * Tn * 3 * C, 3, 3.0f);
  std::vector<float> y = x;
  qk_transform_forward(y.data(), nullptr, B, Tn, C, NH, make(false, true), 4000);
  for (int row = 0; row < B * Tn; ++row) {
    for (int j = 0; j < 2 * NH; ++j) {
      double n0 = 0.0, n1 = 0.0;
      for (int i = 0; i < hs; ++i) {
        const size_t k = static_cast<size_t>(row) * 3 * C + j * hs + i;
        n0 += static_cast<double>(x[k]) * x[k];
        n1 += static_cast<double>(y[k]) * y[k];
      }
      EXPECT_NEAR(n1, n0, 1e-6 * n0) << "row " << row << " head " << j;
    }
  }
}

// q . k after RoPE depends only on pos_q - pos_k: one q and one k vector at
// positions (a, b) give the same per-head dot products as at (a + 3, b + 3).
// Uses the decoding form (B rows, Tn = 1, pos0 = the position).
TEST(QkTransform, RopeDotDependsOnlyOnPositionDifference) {
  const int C = 32, NH = 2, hs = C / NH;
  const auto x = random_vector(3 * C, 4);
  auto at = [&](int pos) {
    std::vector<float> y = x;
    qk_transform_forward(y.data(), nullptr, 1, 1, C, NH, make(false, true), pos);
    return y;
  };
  auto dots = [&](const std::vector<float>& q_row, const std::vector<float>& k_row) {
    std::vector<double> d(NH, 0.0);
    for (int h = 0; h < NH; ++h)
      for (int i = 0; i < hs; ++i) d[h] += static_cast<double>(q_row[h * hs + i]) * k_row[C + h * hs + i];
    return d;
  };
  for (auto [a, b] : {std::pair{5, 2}, std::pair{0, 11}, std::pair{8000, 7990}, std::pair{100, 100}}) {
    const auto d0 = dots(at(a), at(b));
    const auto d1 = dots(at(a + 3), at(b + 3));
    double scale = 0.0;  // |q| |k| bounds the dot
    for (int i = 0; i < C; ++i) scale += std::abs(static_cast<double>(x[i]) * x[C + i]);
    for (int h = 0; h < NH; ++h)
      EXPECT_NEAR(d1[h], d0[h], 2e-6 * scale) << "a " << a << " b " << b << " h " << h;
    // ...and it does depend on the difference.
    const auto d2 = dots(at(a + 1), at(b));
    EXPECT_GT(std::abs(d2[0] - d0[0]) + std::abs(d2[1] - d0[1]), 1e-3) << "a " << a << " b " << b;
  }
}

void check_backward(const QkTransform& tf, int pos0) {
  SCOPED_TRACE(label(tf, pos0));
  const int B = 2, Tn = 5, C = 16, NH = 2;
  const size_t n = static_cast<size_t>(B) * Tn * 3 * C;
  auto x = random_vector(n, 5, 2.0f), wout = random_vector(n, 6);
  std::vector<float> y(n), rstd(B * Tn * 2 * NH);
  auto loss = [&] {
    y = x;
    qk_transform_forward(y.data(), rstd.data(), B, Tn, C, NH, tf, pos0);
    return weighted_sum(y.data(), wout.data(), n);
  };
  loss();  // y, rstd: the saved forward
  std::vector<float> d = wout;
  qk_transform_backward(d.data(), y.data(), tf.qk_norm ? rstd.data() : nullptr, B, Tn, C, NH, tf, pos0);
  for (size_t i = 0; i < n; ++i) {
    if (static_cast<int>(i % (3 * C)) >= 2 * C) {
      ASSERT_EQ(d[i], wout[i]) << "v gradient changed at " << i;
    }
  }
  chorus::testing::GradCheckOptions opt;
  opt.eps = 1e-3;
  opt.atol = 2e-3;
  expect_grad_close("dqkv", x.data(), d.data(), n, loss, opt);
}

TEST(QkTransform, BackwardQkNormOnly) {
  check_backward(make(true, false), 0);
  check_backward(make(true, false), 7);
}
TEST(QkTransform, BackwardRotaryOnly) {
  check_backward(make(false, true), 0);
  check_backward(make(false, true), 7);
}
TEST(QkTransform, BackwardQkNormAndRotary) {
  check_backward(make(true, true), 0);
  check_backward(make(true, true), 7);
}

// The parallel path (rows above the threshold) gives the same bits as rows
// transformed one by one in the decoding form.
TEST(QkTransform, ParallelMatchesDecodingRows) {
  const int B = 3, Tn = 70, C = 64, NH = 4;
  const auto tf = make(true, true);
  const size_t n = static_cast<size_t>(B) * Tn * 3 * C;
  const auto x = random_vector(n, 7, 2.0f), g = random_vector(n, 8);
  std::vector<float> y = x, rstd(B * Tn * 2 * NH);
  qk_transform_forward(y.data(), rstd.data(), B, Tn, C, NH, tf, 11);
  std::vector<float> d = g;
  qk_transform_backward(d.data(), y.data(), rstd.data(), B, Tn, C, NH, tf, 11);
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < Tn; ++t) {
      const size_t off = (static_cast<size_t>(b) * Tn + t) * 3 * C;
      std::vector<float> y1(x.begin() + off, x.begin() + off + 3 * C), r1(2 * NH);
      qk_transform_forward(y1.data(), r1.data(), 1, 1, C, NH, tf, 11 + t);
      std::vector<float> d1(g.begin() + off, g.begin() + off + 3 * C);
      qk_transform_backward(d1.data(), y1.data(), r1.data(), 1, 1, C, NH, tf, 11 + t);
      for (int c = 0; c < 3 * C; ++c) {
        ASSERT_EQ(y1[c], y[off + c]) << b << " " << t << " " << c;
        ASSERT_EQ(d1[c], d[off + c]) << b << " " << t << " " << c;
      }
    }
  }
}

TEST(QkTransform, RejectsBadShapes) {
  std::vector<float> buf(3 * 18, 0.0f), rstd(8);
  // 18 % 4 != 0; an odd head size (9) with rotary; qk_norm without rstd.
  EXPECT_THROW(qk_transform_forward(buf.data(), rstd.data(), 1, 1, 18, 4, make(true, false)), Error);
  EXPECT_THROW(qk_transform_forward(buf.data(), rstd.data(), 1, 1, 18, 2, make(false, true)), Error);
  EXPECT_THROW(qk_transform_forward(buf.data(), nullptr, 1, 1, 18, 2, make(true, false)), Error);
  EXPECT_NO_THROW(qk_transform_forward(buf.data(), rstd.data(), 1, 1, 18, 2, make(true, false)));
}

// bf16 / fp16: the T path computes in fp32 from the T values and rounds once,
// so each output is within one T rounding of the fp32 layer run on the same
// (T-rounded) values; v columns are copied bit for bit.
template <typename T>
class QkTransformMixed : public ::testing::Test {};
TYPED_TEST_SUITE(QkTransformMixed, StorageTypes);

TYPED_TEST(QkTransformMixed, ForwardBackwardMatchFp32) {
  using T = TypeParam;
  const int B = 3, Tn = 40, C = 96, NH = 3;  // above the parallel threshold
  const size_t n = static_cast<size_t>(B) * Tn * 3 * C;
  for (const auto& tf : {make(true, false), make(false, true), make(true, true)}) {
    SCOPED_TRACE(label(tf, 5));
    auto x = random_vector(n, 9, 2.0f), g = random_vector(n, 10);
    const auto xt = round_inputs<T>(x), gt = round_inputs<T>(g);
    std::vector<float> y = x, rstd(B * Tn * 2 * NH);
    qk_transform_forward(y.data(), rstd.data(), B, Tn, C, NH, tf, 5);
    std::vector<T> yt = xt;
    std::vector<float> rstdt(B * Tn * 2 * NH);
    qk_transform_forward(yt.data(), rstdt.data(), B, Tn, C, NH, tf, 5);
    std::vector<float> qk, qk_ref;
    std::vector<T> qk_t;
    for (size_t i = 0; i < n; ++i) {
      if (static_cast<int>(i % (3 * C)) >= 2 * C) {
        ASSERT_EQ(yt[i].bits, xt[i].bits) << "v column changed at " << i;
      } else {
        qk_t.push_back(yt[i]);
        qk_ref.push_back(y[i]);
      }
    }
    expect_rounded_once("forward q,k", qk_t, qk_ref, RoundedBound::kTwoU);
    if (tf.qk_norm) {
      for (size_t i = 0; i < rstd.size(); ++i) EXPECT_NEAR(rstdt[i], rstd[i], 1e-6 * rstd[i]) << i;
    }

    // Backward from the T forward's saved values, against fp32 on the same values.
    std::vector<float> ysaved = widen(yt), d = g;
    qk_transform_backward(d.data(), ysaved.data(), rstdt.data(), B, Tn, C, NH, tf, 5);
    std::vector<T> dt = gt;
    qk_transform_backward(dt.data(), yt.data(), rstdt.data(), B, Tn, C, NH, tf, 5);
    std::vector<float> dqk_ref;
    std::vector<T> dqk_t;
    for (size_t i = 0; i < n; ++i) {
      if (static_cast<int>(i % (3 * C)) >= 2 * C) {
        ASSERT_EQ(dt[i].bits, gt[i].bits) << "v gradient changed at " << i;
      } else {
        dqk_t.push_back(dt[i]);
        dqk_ref.push_back(d[i]);
      }
    }
    expect_rounded_once("backward dq,dk", dqk_t, dqk_ref, RoundedBound::kTwoU);
  }
}

}  // namespace
}  // namespace chorus::nn
