#include "nn/layernorm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "grad_check.h"

namespace chorus::nn {
namespace {

using chorus::testing::expect_grad_close;
using chorus::testing::random_vector;
using chorus::testing::weighted_sum;

TEST(LayerNorm, ForwardMatchesDefinition) {
  const int N = 5, C = 33;
  auto x = random_vector(N * C, 1, 3.0f), w = random_vector(C, 2), b = random_vector(C, 3);
  for (int c = 0; c < C; ++c) x[c] += 100.0f;  // a large offset: two-pass variance stays accurate
  std::vector<float> out(N * C), mean(N), rstd(N);
  layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
  for (int n = 0; n < N; ++n) {
    double m = 0.0, v = 0.0;
    for (int c = 0; c < C; ++c) m += x[n * C + c];
    m /= C;
    for (int c = 0; c < C; ++c) v += (x[n * C + c] - m) * (x[n * C + c] - m);
    v /= C;
    const double rs = 1.0 / std::sqrt(v + kLayerNormEps);
    EXPECT_NEAR(mean[n], m, 1e-5 * std::max(1.0, std::abs(m)));
    EXPECT_NEAR(rstd[n], rs, 1e-5 * rs);
    for (int c = 0; c < C; ++c) EXPECT_NEAR(out[n * C + c], (x[n * C + c] - m) * rs * w[c] + b[c], 2e-5);
  }
}

void check_backward(int N, int C, bool with_residual, size_t max_checks = SIZE_MAX) {
  auto x = random_vector(N * C, 1, 2.0f), w = random_vector(C, 2), b = random_vector(C, 3);
  auto wout = random_vector(N * C, 4);
  auto dres = random_vector(N * C, 5);
  std::vector<float> out(N * C), mean(N), rstd(N);
  auto loss = [&] {
    layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    return weighted_sum(out.data(), wout.data(), out.size());
  };
  loss();
  std::vector<float> dinp(N * C, std::numeric_limits<float>::quiet_NaN()), dw(C, 1.0f), db(C, 1.0f);
  if (with_residual) dinp = dres;  // in place: dinp aliases dresidual
  layernorm_backward(dinp.data(), dw.data(), db.data(), wout.data(), x.data(), w.data(), mean.data(),
                     rstd.data(), N, C, with_residual ? dinp.data() : nullptr);
  if (with_residual) {
    for (int i = 0; i < N * C; ++i) dinp[i] -= dres[i];
  }
  for (auto& g : dw) g -= 1.0f;
  for (auto& g : db) g -= 1.0f;
  chorus::testing::GradCheckOptions opt;
  opt.eps = 1e-3;  // curvature of 1/sqrt: keep the step small
  opt.atol = 2e-3;
  opt.max_checks = max_checks;
  expect_grad_close("dinp", x.data(), dinp.data(), x.size(), loss, opt);
  expect_grad_close("dweight", w.data(), dw.data(), w.size(), loss, opt);
  expect_grad_close("dbias", b.data(), db.data(), b.size(), loss, opt);
}

TEST(LayerNorm, BackwardMatchesFiniteDifferences) { check_backward(6, 20, false); }
TEST(LayerNorm, BackwardWithResidualInPlace) { check_backward(4, 70, true); }
TEST(LayerNorm, BackwardParallelPath) { check_backward(300, 130, false, 400); }

}  // namespace
}  // namespace chorus::nn
