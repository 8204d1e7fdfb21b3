#include "nn/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "grad_check.h"

namespace chorus::nn {
namespace {

using chorus::testing::expect_grad_close;
using chorus::testing::random_vector;
using chorus::testing::weighted_sum;

// Straightforward causal attention in double: out (B, T, C).
std::vector<double> naive_attention(const std::vector<float>& qkv, int B, int T, int C, int NH) {
  const int hs = C / NH;
  std::vector<double> out(static_cast<size_t>(B) * T * C, 0.0);
  std::vector<double> p(T);
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      for (int t = 0; t < T; ++t) {
        const float* q = &qkv[(static_cast<size_t>(b) * T + t) * 3 * C + h * hs];
        double mx = -1e300;
        for (int u = 0; u <= t; ++u) {
          const float* k = &qkv[(static_cast<size_t>(b) * T + u) * 3 * C + C + h * hs];
          double s = 0.0;
          for (int i = 0; i < hs; ++i) s += static_cast<double>(q[i]) * k[i];
          p[u] = s / std::sqrt(static_cast<double>(hs));
          mx = std::max(mx, p[u]);
        }
        double z = 0.0;
        for (int u = 0; u <= t; ++u) z += (p[u] = std::exp(p[u] - mx));
        for (int u = 0; u <= t; ++u) {
          const float* v = &qkv[(static_cast<size_t>(b) * T + u) * 3 * C + 2 * C + h * hs];
          for (int i = 0; i < hs; ++i)
            out[(static_cast<size_t>(b) * T + t) * C + h * hs + i] += p[u] / z * v[i];
        }
      }
    }
  }
  return out;
}

void check_forward(int B, int T, int C, int NH) {
  auto qkv = random_vector(static_cast<size_t>(B) * T * 3 * C, 1, 2.0f);
  std::vector<float> out(static_cast<size_t>(B) * T * C), att(static_cast<size_t>(B) * NH * T * T);
  attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
  auto ref = naive_attention(qkv, B, T, C, NH);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 2e-5) << "element " << i;
  // Saved probabilities: rows sum to 1 over t' <= t.
  for (int bh = 0; bh < B * NH; ++bh) {
    for (int t = 0; t < T; ++t) {
      double s = 0.0;
      for (int u = 0; u <= t; ++u) s += att[(static_cast<size_t>(bh) * T + t) * T + u];
      ASSERT_NEAR(s, 1.0, 1e-5);
    }
  }
}

TEST(Attention, ForwardMatchesNaiveOneBlock) { check_forward(2, 7, 12, 3); }
// T spans several causal row blocks, the last one partial.
TEST(Attention, ForwardMatchesNaiveManyBlocks) { check_forward(2, 2 * kAttnBlock + 5, 16, 2); }

void check_backward(int B, int T, int C, int NH, size_t max_checks) {
  auto qkv = random_vector(static_cast<size_t>(B) * T * 3 * C, 2, 1.5f);
  auto wout = random_vector(static_cast<size_t>(B) * T * C, 3);
  std::vector<float> out(static_cast<size_t>(B) * T * C), att(static_cast<size_t>(B) * NH * T * T);
  auto loss = [&] {
    attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
    return weighted_sum(out.data(), wout.data(), out.size());
  };
  loss();
  std::vector<float> dqkv(qkv.size(), std::numeric_limits<float>::quiet_NaN());
  attention_backward(dqkv.data(), wout.data(), qkv.data(), att.data(), B, T, C, NH);
  chorus::testing::GradCheckOptions opt;
  opt.eps = 3e-3;
  opt.atol = 2e-3;
  opt.max_checks = max_checks;
  expect_grad_close("dqkv", qkv.data(), dqkv.data(), qkv.size(), loss, opt);
}

TEST(Attention, BackwardMatchesFiniteDifferences) { check_backward(2, 6, 8, 2, SIZE_MAX); }
TEST(Attention, BackwardManyBlocksMatchesFiniteDifferences) {
  check_backward(1, 2 * kAttnBlock + 3, 8, 2, 1500);
}

TEST(Attention, DecodeMatchesFullForwardAtEachPosition) {
  const int B = 2, T = 9, C = 12, NH = 3;
  auto qkv = random_vector(static_cast<size_t>(B) * T * 3 * C, 4, 2.0f);
  std::vector<float> out(static_cast<size_t>(B) * T * C), att(static_cast<size_t>(B) * NH * T * T);
  attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
  // Cache laid out (B, T, C) for k and v.
  std::vector<float> kc(static_cast<size_t>(B) * T * C), vc(kc.size());
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < C; ++c) {
        kc[(b * T + t) * C + c] = qkv[(b * T + t) * 3 * C + C + c];
        vc[(b * T + t) * C + c] = qkv[(b * T + t) * 3 * C + 2 * C + c];
      }
  std::vector<float> q(static_cast<size_t>(B) * 3 * C), y(static_cast<size_t>(B) * C), scores(B * NH * T);
  for (int t = 0; t < T; ++t) {
    for (int b = 0; b < B; ++b)
      for (int c = 0; c < 3 * C; ++c) q[b * 3 * C + c] = qkv[(b * T + t) * 3 * C + c];
    attention_decode(y.data(), scores.data(), q.data(), 3 * C, kc.data(), vc.data(),
                     static_cast<size_t>(T) * C, B, t + 1, C, NH);
    for (int b = 0; b < B; ++b)
      for (int c = 0; c < C; ++c) EXPECT_NEAR(y[b * C + c], out[(b * T + t) * C + c], 1e-5) << "t " << t;
  }
}

}  // namespace
}  // namespace chorus::nn
