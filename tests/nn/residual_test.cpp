#include "nn/residual.h"

#include <gtest/gtest.h>

#include <limits>

#include "grad_check.h"

namespace chorus::nn {
namespace {

using chorus::testing::expect_grad_close;
using chorus::testing::random_vector;
using chorus::testing::weighted_sum;

TEST(Residual, ForwardAddsAndBackwardMatchesFiniteDifferences) {
  const size_t n = 300;
  auto a = random_vector(n, 1), b = random_vector(n, 2), wout = random_vector(n, 3);
  std::vector<float> out(n);
  auto loss = [&] {
    residual_forward(out.data(), a.data(), b.data(), n);
    return weighted_sum(out.data(), wout.data(), n);
  };
  loss();
  for (size_t i = 0; i < n; ++i) EXPECT_EQ(out[i], a[i] + b[i]);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> da(n, nan), db(n, nan);
  residual_backward(da.data(), db.data(), wout.data(), n);
  expect_grad_close("da", a.data(), da.data(), n, loss);
  expect_grad_close("db", b.data(), db.data(), n, loss);
}

TEST(Residual, InPlaceAndLarge) {
  const size_t n = 100003;
  auto a = random_vector(n, 1), b = random_vector(n, 2);
  auto sum = a;
  residual_forward(sum.data(), sum.data(), b.data(), n);  // out aliases a
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(sum[i], a[i] + b[i]);
  std::vector<float> da(n);
  residual_backward(da.data(), b.data(), b.data(), n);  // db aliases dout: no copy needed
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(da[i], b[i]);
}

}  // namespace
}  // namespace chorus::nn
