#include "nn/gelu.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "backend/cpu/vmath.h"
#include "grad_check.h"

namespace chorus::nn {
namespace {

using chorus::testing::expect_grad_close;
using chorus::testing::random_vector;
using chorus::testing::weighted_sum;

TEST(ExpApprox, WithinFewUlpOfExp) {
  double worst = 0.0;
  for (double x = -87.0; x <= 88.0; x += 0.001) {
    const float xf = static_cast<float>(x);
    const double ref = std::exp(static_cast<double>(xf));
    const double got = backend::cpu::exp_approx(xf);
    worst = std::max(worst, std::abs(got - ref) / ref);
  }
  EXPECT_LT(worst, 3e-7);  // ~2.5 ulp
  EXPECT_EQ(backend::cpu::exp_approx(0.0f), 1.0f);
  EXPECT_EQ(backend::cpu::exp_approx(-1e30f), 0.0f);
  EXPECT_EQ(backend::cpu::exp_approx(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_TRUE(std::isfinite(backend::cpu::exp_approx(1e30f)));
}

TEST(ExpApprox, VectorHelpersMatchScalar) {
  // Length not a multiple of the vector width: the scalar tail runs too.
  const int n = 1003;
  std::vector<float> x(n), y(n);
  for (int i = 0; i < n; ++i) x[i] = -100.0f + 0.11f * i;  // crosses the underflow cut
  backend::cpu::exp_store_scaled(y.data(), x.data(), n, 1.5f, 0.5f);
  double sum = 0.0;
  for (int i = 0; i < n; ++i) {
    ASSERT_EQ(y[i], backend::cpu::exp_approx(x[i] - 1.5f) * 0.5f) << i;
    sum += backend::cpu::exp_approx(x[i] - 1.5f);
  }
  EXPECT_NEAR(backend::cpu::sum_exp(x.data(), n, 1.5f), sum, 1e-6 * sum);
  EXPECT_EQ(backend::cpu::max_of(x.data(), n), x[n - 1]);
  EXPECT_NEAR(backend::cpu::dot(x.data(), y.data(), n), [&] {
    double d = 0.0;
    for (int i = 0; i < n; ++i) d += static_cast<double>(x[i]) * y[i];
    return d;
  }(), 1e-5 * std::abs(sum) * 100);
}

TEST(Gelu, ForwardMatchesTanhFormula) {
  auto x = random_vector(2000, 1, 12.0f);
  x.push_back(0.0f);
  x.push_back(-100.0f);
  x.push_back(100.0f);
  std::vector<float> out(x.size());
  gelu_forward(out.data(), x.data(), x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    const double ref = 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
    EXPECT_NEAR(out[i], ref, 1e-6 * std::max(1.0, std::abs(ref))) << "x = " << v;
  }
}

TEST(Gelu, BackwardMatchesFiniteDifferences) {
  const size_t n = 500;
  auto x = random_vector(n, 2, 4.0f), wout = random_vector(n, 3);
  std::vector<float> out(n);
  auto loss = [&] {
    gelu_forward(out.data(), x.data(), n);
    return weighted_sum(out.data(), wout.data(), n);
  };
  std::vector<float> dinp(n, std::numeric_limits<float>::quiet_NaN());
  gelu_backward(dinp.data(), x.data(), wout.data(), n);
  chorus::testing::GradCheckOptions opt;
  opt.eps = 1e-3;
  opt.atol = 1e-3;
  expect_grad_close("dinp", x.data(), dinp.data(), n, loss, opt);
  // In place (dinp aliases dout) and on the parallel path gives the same values.
  const size_t big = 100000;
  auto xb = random_vector(big, 4, 5.0f), db = random_vector(big, 5);
  std::vector<float> ref(big, 0.0f);
  gelu_backward(ref.data(), xb.data(), db.data(), big);
  gelu_backward(db.data(), xb.data(), db.data(), big);
  for (size_t i = 0; i < big; ++i) ASSERT_EQ(db[i], ref[i]);
}

}  // namespace
}  // namespace chorus::nn
