// Test helpers for the layer gradient checks: deterministic random fills and a
// central-difference check of an analytic gradient.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "core/rng.h"

namespace chorus::testing {

// Uniform in [-scale, scale).
inline std::vector<float> random_vector(size_t n, uint64_t seed, float scale = 1.0f) {
  Rng rng(seed, 7);
  std::vector<float> v(n);
  for (auto& x : v) x = scale * (2.0f * rng.uniform() - 1.0f);
  return v;
}

// sum_i out[i] * w[i] in double: the scalar whose gradient w.r.t. out is w.
inline double weighted_sum(const float* out, const float* w, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; ++i) s += static_cast<double>(out[i]) * w[i];
  return s;
}

struct GradCheckOptions {
  double eps = 1e-2;   // central-difference step
  double atol = 1e-3;  // |fd - analytic| <= atol + rtol * max(|fd|, |analytic|)
  double rtol = 1e-2;
  size_t max_checks = SIZE_MAX;  // check a random subset of at most this many elements
  uint64_t seed = 1;
  std::vector<size_t> indices;  // non-empty: check exactly these elements
};

// Compares analytic[i] with (loss(x[i] + eps) - loss(x[i] - eps)) / 2eps for the
// elements of x (n floats). loss() must recompute the forward from x. Reports
// the first few mismatches and the worst error.
inline void expect_grad_close(const std::string& name, float* x, const float* analytic, size_t n,
                              const std::function<double()>& loss, GradCheckOptions opt = {}) {
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), size_t{0});
  if (!opt.indices.empty()) {
    idx = opt.indices;
  } else if (opt.max_checks < n) {
    Rng rng(opt.seed, 11);
    for (size_t i = 0; i < opt.max_checks; ++i) std::swap(idx[i], idx[i + rng.below(n - i)]);
    idx.resize(opt.max_checks);
  }
  int n_bad = 0;
  double worst = 0.0;
  for (size_t i : idx) {
    const float saved = x[i];
    x[i] = saved + static_cast<float>(opt.eps);
    const double lp = loss();
    x[i] = saved - static_cast<float>(opt.eps);
    const double lm = loss();
    x[i] = saved;
    // the actual float step, not the nominal one
    const double h = static_cast<double>(saved + static_cast<float>(opt.eps)) -
                     static_cast<double>(saved - static_cast<float>(opt.eps));
    const double fd = (lp - lm) / h;
    const double an = analytic[i];
    const double err = std::abs(fd - an);
    const double tol = opt.atol + opt.rtol * std::max(std::abs(fd), std::abs(an));
    worst = std::max(worst, std::isnan(err) ? INFINITY : err / tol);
    if (!(err <= tol) && ++n_bad <= 5) {  // a NaN on either side fails too
      ADD_FAILURE() << name << "[" << i << "]: analytic " << an << " vs finite difference " << fd << " (err "
                    << err << ", tol " << tol << ")";
    }
  }
  EXPECT_EQ(n_bad, 0) << name << ": " << n_bad << " of " << idx.size() << " elements off";
  ::testing::Test::RecordProperty(name + "_worst_err_over_tol", std::to_string(worst));
}

}  // namespace chorus::testing
