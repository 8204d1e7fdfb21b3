#include "nn/rmsnorm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/dtype.h"
#include "grad_check.h"
#include "mixed_check.h"

namespace chorus::nn {
namespace {

using namespace chorus::testing;  // grad_check.h, mixed_check.h

// Double-precision reference: out = x / sqrt(mean(x^2) + eps) * w (w == nullptr: ones).
void reference(std::vector<double>& out, std::vector<double>& rstd, const std::vector<float>& x,
               const float* w, int N, int C) {
  out.assign(static_cast<size_t>(N) * C, 0.0);
  rstd.assign(N, 0.0);
  for (int n = 0; n < N; ++n) {
    double ss = 0.0;
    for (int c = 0; c < C; ++c) ss += static_cast<double>(x[n * C + c]) * x[n * C + c];
    rstd[n] = 1.0 / std::sqrt(ss / C + kRmsNormEps);
    for (int c = 0; c < C; ++c) out[n * C + c] = x[n * C + c] * rstd[n] * (w ? w[c] : 1.0);
  }
}

TEST(RmsNorm, ForwardMatchesDefinition) {
  const int N = 5, C = 33;
  auto x = random_vector(N * C, 1, 3.0f), w = random_vector(C, 2);
  for (int c = 0; c < C; ++c) x[c] += 100.0f;     // a large common offset is not removed
  for (int c = 0; c < C; ++c) x[C + c] *= 1e-4f;  // a small row: eps matters
  for (const float* wp : {static_cast<const float*>(w.data()), static_cast<const float*>(nullptr)}) {
    std::vector<float> out(N * C), rstd(N);
    rmsnorm_forward(out.data(), rstd.data(), x.data(), wp, N, C);
    std::vector<double> ref, ref_rstd;
    reference(ref, ref_rstd, x, wp, N, C);
    for (int n = 0; n < N; ++n) {
      EXPECT_NEAR(rstd[n], ref_rstd[n], 1e-6 * ref_rstd[n]) << n;
      for (int c = 0; c < C; ++c)
        EXPECT_NEAR(out[n * C + c], ref[n * C + c], 2e-6 * std::max(1.0, std::abs(ref[n * C + c])));
    }
  }
}

// with_weight == false: weight nullptr and dweight nullptr (and, separately,
// the all-ones gain's gradient when dweight is given).
void check_backward(int N, int C, bool with_residual, bool with_weight, size_t max_checks = SIZE_MAX) {
  auto x = random_vector(N * C, 1, 2.0f), w = random_vector(C, 2);
  for (auto& g : w) g += 0.5f;
  auto wout = random_vector(N * C, 4);
  auto dres = random_vector(N * C, 5);
  std::vector<float> ones(C, 1.0f);
  float* wp = with_weight ? w.data() : ones.data();  // what the finite differences perturb
  std::vector<float> out(N * C), rstd(N);
  // loss: forward as called (weight nullptr without weight); loss_gain: the
  // same with the gain explicit (`ones` without weight), for the dweight check.
  auto loss = [&] {
    rmsnorm_forward(out.data(), rstd.data(), x.data(), with_weight ? wp : nullptr, N, C);
    return weighted_sum(out.data(), wout.data(), out.size());
  };
  auto loss_gain = [&] {
    rmsnorm_forward(out.data(), rstd.data(), x.data(), wp, N, C);
    return weighted_sum(out.data(), wout.data(), out.size());
  };
  loss();
  std::vector<float> dinp(N * C, std::numeric_limits<float>::quiet_NaN()), dw(C, 1.0f);
  if (with_residual) dinp = dres;  // in place: dinp aliases dresidual
  rmsnorm_backward(dinp.data(), with_weight ? dw.data() : nullptr, wout.data(), x.data(),
                   with_weight ? w.data() : nullptr, rstd.data(), N, C,
                   with_residual ? dinp.data() : nullptr);
  if (with_residual) {
    for (int i = 0; i < N * C; ++i) dinp[i] -= dres[i];
  }
  if (!with_weight) {
    for (float g : dw) ASSERT_EQ(g, 1.0f) << "dweight == nullptr was passed; this buffer must stay untouched";
    // The gradient of an all-ones gain, from weight == nullptr.
    std::vector<float> scratch(N * C);
    rmsnorm_backward(scratch.data(), dw.data(), wout.data(), x.data(), nullptr, rstd.data(), N, C);
  }
  for (auto& g : dw) g -= 1.0f;
  chorus::testing::GradCheckOptions opt;
  opt.eps = 1e-3;  // curvature of 1/sqrt: keep the step small
  opt.atol = 2e-3;
  opt.max_checks = max_checks;
  expect_grad_close("dinp", x.data(), dinp.data(), x.size(), loss, opt);
  expect_grad_close("dweight", wp, dw.data(), C, loss_gain, opt);
}

TEST(RmsNorm, BackwardMatchesFiniteDifferences) { check_backward(6, 20, false, true); }
TEST(RmsNorm, BackwardWithResidualInPlace) { check_backward(4, 70, true, true); }
TEST(RmsNorm, BackwardWithoutWeight) { check_backward(5, 24, false, false); }
TEST(RmsNorm, BackwardWithoutWeightWithResidual) { check_backward(3, 40, true, false); }
TEST(RmsNorm, BackwardParallelPath) { check_backward(300, 130, false, true, 400); }

TEST(RmsNorm, BackwardAccumulatesIntoDweight) {
  const int N = 7, C = 150;
  auto x = random_vector(N * C, 1), w = random_vector(C, 2), dout = random_vector(N * C, 3);
  std::vector<float> out(N * C), rstd(N), dx(N * C), dw(C, 0.0f);
  rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C);
  rmsnorm_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), N, C);
  auto dw2 = random_vector(C, 4, 10.0f);
  const auto dw0 = dw2;
  for (int k = 0; k < 2; ++k)
    rmsnorm_backward(dx.data(), dw2.data(), dout.data(), x.data(), w.data(), rstd.data(), N, C);
  for (int c = 0; c < C; ++c) EXPECT_NEAR(dw2[c], dw0[c] + 2.0f * dw[c], 1e-5f) << c;
}

// bf16 / fp16 against fp32 on the same (T-rounded) inputs, as
// tests/nn/mixed_precision_test.cpp: outputs computed in fp32 and rounded once
// are within one T ulp of the fp32 result (plus fp32 noise), rstd and dweight
// equal the fp32 ones to fp32 summation order.
template <typename T>
class RmsNormMixed : public ::testing::Test {};
TYPED_TEST_SUITE(RmsNormMixed, StorageTypes);

TYPED_TEST(RmsNormMixed, ForwardBackwardMatchFp32) {
  using T = TypeParam;
  const int N = 70, C = 256;  // above the parallel threshold; 4 column blocks of dweight
  auto x = random_vector(N * C, 11, 2.0f), w = random_vector(C, 12, 0.5f);
  for (auto& g : w) g += 1.0f;
  auto dout = random_vector(N * C, 14), dres = random_vector(N * C, 15);
  const auto xt = round_inputs<T>(x), wt = round_inputs<T>(w);
  const auto doutt = round_inputs<T>(dout), drest = round_inputs<T>(dres);

  for (bool with_weight : {true, false}) {
    SCOPED_TRACE(with_weight ? "weight" : "no weight");
    std::vector<float> out(N * C), rstd(N);
    rmsnorm_forward(out.data(), rstd.data(), x.data(), with_weight ? w.data() : nullptr, N, C);
    auto outt = nan_filled<T>(N * C);
    std::vector<float> rstdt(N);
    rmsnorm_forward(outt.data(), rstdt.data(), xt.data(), with_weight ? wt.data() : nullptr, N, C);
    expect_rounded_once("out", outt, out, RoundedBound::kTwoU);
    for (int n = 0; n < N; ++n) EXPECT_NEAR(rstdt[n], rstd[n], 1e-6 * rstd[n]);

    std::vector<float> dx = dres, dw(C, 0.0f);
    rmsnorm_backward(dx.data(), dw.data(), dout.data(), x.data(), with_weight ? w.data() : nullptr,
                     rstd.data(), N, C, dx.data());
    std::vector<T> dxt = drest;
    std::vector<float> dwt(C, 0.0f);
    rmsnorm_backward(dxt.data(), dwt.data(), doutt.data(), xt.data(), with_weight ? wt.data() : nullptr,
                     rstdt.data(), N, C, dxt.data());
    expect_rounded_once("dinp", dxt, dx, RoundedBound::kTwoU);
    double mx = 0.0;
    for (float g : dw) mx = std::max(mx, std::abs(static_cast<double>(g)));
    for (int c = 0; c < C; ++c) EXPECT_NEAR(dwt[c], dw[c], 1e-5 * mx) << c;
  }
}

}  // namespace
}  // namespace chorus::nn
