#include "nn/softmax_cross_entropy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "grad_check.h"

namespace chorus::nn {
namespace {

using chorus::testing::expect_grad_close;
using chorus::testing::random_vector;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

TEST(SoftmaxCrossEntropy, ForwardMatchesDefinitionAndIgnoresPadding) {
  const int N = 5, V = 50, Vp = 64;
  auto logits = random_vector(N * Vp, 1, 8.0f);
  for (int n = 0; n < N; ++n)
    for (int v = V; v < Vp; ++v) logits[n * Vp + v] = n % 2 ? kNaN : 1e30f;  // must never be read
  std::vector<int32_t> targets = {3, 49, 0, -1, 17};
  std::vector<float> losses(N), lse(N);
  softmax_cross_entropy_forward(losses.data(), lse.data(), logits.data(), targets.data(), N, V, Vp);
  for (int n = 0; n < N; ++n) {
    double mx = -1e300, z = 0.0;
    for (int v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(logits[n * Vp + v]));
    for (int v = 0; v < V; ++v) z += std::exp(logits[n * Vp + v] - mx);
    const double ref_lse = mx + std::log(z);
    EXPECT_NEAR(lse[n], ref_lse, 1e-5 * std::abs(ref_lse));
    if (targets[n] < 0) {
      EXPECT_EQ(losses[n], 0.0f);
    } else {
      EXPECT_NEAR(losses[n], ref_lse - logits[n * Vp + targets[n]], 2e-5);
    }
  }
}

TEST(SoftmaxCrossEntropy, BackwardMatchesFiniteDifferences) {
  const int N = 6, V = 37, Vp = 64;
  auto logits = random_vector(N * Vp, 2, 3.0f);
  for (int n = 0; n < N; ++n)
    for (int v = V; v < Vp; ++v) logits[n * Vp + v] = 0.0f;
  std::vector<int32_t> targets = {1, 36, -1, 0, 20, 20};
  std::vector<float> losses(N), lse(N);
  // The objective: weighted sum of the per-row losses with a common dloss.
  const float dloss = 0.37f;
  auto loss = [&] {
    softmax_cross_entropy_forward(losses.data(), lse.data(), logits.data(), targets.data(), N, V, Vp);
    double s = 0.0;
    for (float l : losses) s += dloss * static_cast<double>(l);
    return s;
  };
  loss();
  std::vector<float> dlogits(N * Vp, kNaN);
  softmax_cross_entropy_backward(dlogits.data(), logits.data(), lse.data(), targets.data(), dloss, N, V, Vp);
  chorus::testing::GradCheckOptions opt;
  opt.eps = 1e-3;
  opt.atol = 5e-4;
  expect_grad_close("dlogits", logits.data(), dlogits.data(), logits.size(), loss, opt);
  for (int n = 0; n < N; ++n) {
    for (int v = V; v < Vp; ++v) EXPECT_EQ(dlogits[n * Vp + v], 0.0f) << "padded column " << v;
    if (targets[n] < 0) {
      for (int v = 0; v < V; ++v) EXPECT_EQ(dlogits[n * Vp + v], 0.0f) << "ignored row";
    }
  }
  // In place (dlogits aliases logits) gives the same result.
  auto inplace = logits;
  softmax_cross_entropy_backward(inplace.data(), inplace.data(), lse.data(), targets.data(), dloss, N, V, Vp);
  for (int i = 0; i < N * Vp; ++i) EXPECT_EQ(inplace[i], dlogits[i]);
}

TEST(SoftmaxCrossEntropy, UniformLogitsGiveLogV) {
  const int N = 300, V = 1000, Vp = 1024;  // parallel path
  std::vector<float> logits(static_cast<size_t>(N) * Vp, 0.5f);
  std::vector<int32_t> targets(N);
  for (int n = 0; n < N; ++n) targets[n] = (n * 31) % V;
  std::vector<float> losses(N), lse(N);
  softmax_cross_entropy_forward(losses.data(), lse.data(), logits.data(), targets.data(), N, V, Vp);
  for (float l : losses) EXPECT_NEAR(l, std::log(static_cast<double>(V)), 1e-5);
}

}  // namespace
}  // namespace chorus::nn
