#include "nn/mlp_activations.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "grad_check.h"
#include "mixed_check.h"

namespace chorus::nn {
namespace {

using namespace chorus::testing;  // grad_check.h, mixed_check.h

double silu_ref(double g) { return g / (1.0 + std::exp(-g)); }

// Values in [-scale, scale) kept at least `gap` away from 0 (the kink of relu^2
// for finite differences).
std::vector<float> away_from_zero(size_t n, uint64_t seed, float scale, float gap) {
  auto v = random_vector(n, seed, scale);
  for (auto& x : v) {
    if (std::abs(x) < gap) x = x < 0 ? x - gap : x + gap;
  }
  return v;
}

TEST(Relu2, ForwardMatchesDefinition) {
  auto x = random_vector(3001, 1, 5.0f);
  x.insert(x.end(), {0.0f, -0.0f, -1e30f, 1e10f, -3.0f, 3.0f});
  std::vector<float> out(x.size());
  relu2_forward(out.data(), x.data(), x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double r = std::max(0.0, static_cast<double>(x[i]));
    EXPECT_NEAR(out[i], r * r, 1e-7 * std::max(1.0, r * r)) << "x = " << x[i];
  }
  std::vector<float> inplace = x;  // out aliasing inp
  relu2_forward(inplace.data(), inplace.data(), x.size());
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(inplace[i], out[i]) << i;
}

TEST(Relu2, BackwardMatchesFiniteDifferences) {
  const size_t n = 500;
  auto x = away_from_zero(n, 2, 4.0f, 0.01f), wout = random_vector(n, 3);
  std::vector<float> out(n);
  auto loss = [&] {
    relu2_forward(out.data(), x.data(), n);
    return weighted_sum(out.data(), wout.data(), n);
  };
  std::vector<float> dinp(n, std::numeric_limits<float>::quiet_NaN());
  relu2_backward(dinp.data(), x.data(), wout.data(), n);
  chorus::testing::GradCheckOptions opt;
  opt.eps = 1e-3;
  expect_grad_close("dinp", x.data(), dinp.data(), n, loss, opt);
  // In place (dinp aliases dout) on the parallel path gives the same values.
  const size_t big = 100003;
  auto xb = random_vector(big, 4, 5.0f), db = random_vector(big, 5);
  std::vector<float> ref(big, 0.0f);
  relu2_backward(ref.data(), xb.data(), db.data(), big);
  relu2_backward(db.data(), xb.data(), db.data(), big);
  for (size_t i = 0; i < big; ++i) ASSERT_EQ(db[i], ref[i]);
}

TEST(SwiGlu, ForwardMatchesDefinition) {
  const int N = 7, F = 37;  // F not a multiple of the vector width: the scalar tail runs
  auto x = random_vector(N * 2 * F, 6, 6.0f);
  x[0] = 0.0f;
  x[1] = -100.0f;  // sigmoid underflows: silu -> -0
  x[2] = 100.0f;
  x[3] = -1e30f;
  std::vector<float> out(N * F);
  swiglu_forward(out.data(), x.data(), N, F);
  for (int n = 0; n < N; ++n) {
    for (int i = 0; i < F; ++i) {
      const double ref = silu_ref(x[n * 2 * F + i]) * x[n * 2 * F + F + i];
      ASSERT_TRUE(std::isfinite(out[n * F + i])) << n << " " << i;
      EXPECT_NEAR(out[n * F + i], ref, 1e-6 * std::max(1.0, std::abs(ref))) << n << " " << i;
    }
  }
}

void check_swiglu_backward(int N, int F, size_t max_checks = SIZE_MAX) {
  const size_t n_in = static_cast<size_t>(N) * 2 * F, n_out = static_cast<size_t>(N) * F;
  auto x = random_vector(n_in, 7, 4.0f), wout = random_vector(n_out, 8);
  std::vector<float> out(n_out);
  auto loss = [&] {
    swiglu_forward(out.data(), x.data(), N, F);
    return weighted_sum(out.data(), wout.data(), n_out);
  };
  std::vector<float> dinp(n_in, std::numeric_limits<float>::quiet_NaN());
  swiglu_backward(dinp.data(), x.data(), wout.data(), N, F);
  chorus::testing::GradCheckOptions opt;
  opt.eps = 1e-3;
  opt.max_checks = max_checks;
  expect_grad_close("dinp", x.data(), dinp.data(), n_in, loss, opt);
}

TEST(SwiGlu, BackwardMatchesFiniteDifferences) { check_swiglu_backward(6, 21); }
TEST(SwiGlu, BackwardParallelPath) { check_swiglu_backward(200, 100, 500); }

TEST(Softcap, ForwardMatchesTanh) {
  const float cap = 15.0f;
  auto x = random_vector(5000, 9, 60.0f);
  x.insert(x.end(), {0.0f, 1e-20f, -1e-20f, 1e4f, -1e4f, 1e30f, -1e30f});
  std::vector<float> y = x;
  softcap_forward(y.data(), y.size(), cap);
  for (size_t i = 0; i < x.size(); ++i) {
    const double ref = cap * std::tanh(static_cast<double>(x[i]) / cap);
    EXPECT_NEAR(y[i], ref, 1e-6 * std::max(1e-20, std::abs(ref))) << "x = " << x[i];
    EXPECT_LE(std::abs(y[i]), cap);
  }
  EXPECT_THROW(softcap_forward(y.data(), y.size(), 0.0f), Error);
  EXPECT_THROW(softcap_backward(y.data(), x.data(), y.size(), -1.0f), Error);
}

TEST(Softcap, BackwardMatchesFiniteDifferences) {
  const size_t n = 600;
  const float cap = 30.0f;
  auto x = random_vector(n, 10, 80.0f), wout = random_vector(n, 11);
  std::vector<float> y(n);
  auto loss = [&] {
    y = x;
    softcap_forward(y.data(), n, cap);
    return weighted_sum(y.data(), wout.data(), n);
  };
  loss();
  std::vector<float> d = wout;
  softcap_backward(d.data(), y.data(), n, cap);
  chorus::testing::GradCheckOptions opt;
  opt.eps = 1e-2;
  opt.atol = 1e-4;
  expect_grad_close("dx", x.data(), d.data(), n, loss, opt);
}

// bf16 / fp16 against fp32 on the same (T-rounded) inputs: each output is
// computed in fp32 and rounded once into T, so it is within one T rounding of
// the fp32 result (tests/nn/mixed_precision_test.cpp's kOnce class).
template <typename T>
class MlpActivationsMixed : public ::testing::Test {};
TYPED_TEST_SUITE(MlpActivationsMixed, StorageTypes);

TYPED_TEST(MlpActivationsMixed, MatchFp32) {
  using T = TypeParam;
  {
    const size_t n = 5 * 4096 + 13;  // parallel chunks and a tail
    auto x = random_vector(n, 21, 4.0f), dout = random_vector(n, 22);
    const auto xt = round_inputs<T>(x), doutt = round_inputs<T>(dout);
    std::vector<float> out(n), dx(n);
    relu2_forward(out.data(), x.data(), n);
    relu2_backward(dx.data(), x.data(), dout.data(), n);
    std::vector<T> outt = xt;  // in place
    relu2_forward(outt.data(), outt.data(), n);
    std::vector<T> dxt = doutt;  // in place
    relu2_backward(dxt.data(), xt.data(), dxt.data(), n);
    expect_rounded_once("relu2 out", outt, out, RoundedBound::kTwoU);
    expect_rounded_once("relu2 dinp", dxt, dx, RoundedBound::kTwoU);
  }
  {
    const int N = 40, F = 500;  // parallel rows, a scalar tail
    auto x = random_vector(N * 2 * F, 23, 4.0f), dout = random_vector(N * F, 24);
    const auto xt = round_inputs<T>(x), doutt = round_inputs<T>(dout);
    std::vector<float> out(N * F), dx(N * 2 * F);
    swiglu_forward(out.data(), x.data(), N, F);
    swiglu_backward(dx.data(), x.data(), dout.data(), N, F);
    auto outt = nan_filled<T>(N * F), dxt = nan_filled<T>(N * 2 * F);
    swiglu_forward(outt.data(), xt.data(), N, F);
    swiglu_backward(dxt.data(), xt.data(), doutt.data(), N, F);
    expect_rounded_once("swiglu out", outt, out, RoundedBound::kTwoU);
    expect_rounded_once("swiglu dinp", dxt, dx, RoundedBound::kTwoU);
  }
  {
    const size_t n = 5 * 4096 + 13;
    const float cap = 15.0f;
    auto x = random_vector(n, 25, 40.0f), dout = random_vector(n, 26);
    const auto xt = round_inputs<T>(x), doutt = round_inputs<T>(dout);
    std::vector<float> y = x, dx = dout;
    softcap_forward(y.data(), n, cap);
    std::vector<T> yt = xt;
    softcap_forward(yt.data(), n, cap);
    expect_rounded_once("softcap out", yt, y, RoundedBound::kTwoU);
    // Backward from the T forward's saved y, against fp32 on the same values.
    const std::vector<float> ysaved = widen(yt);
    softcap_backward(dx.data(), ysaved.data(), n, cap);
    std::vector<T> dxt = doutt;
    softcap_backward(dxt.data(), yt.data(), n, cap);
    expect_rounded_once("softcap dx", dxt, dx, RoundedBound::kTwoU);
  }
}

}  // namespace
}  // namespace chorus::nn
