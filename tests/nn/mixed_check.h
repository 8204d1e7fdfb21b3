// Test helpers for the bf16 / fp16 checks against fp32: rounding fp32 inputs
// to the storage type T, widening T tensors back, NaN-filled outputs, the
// relative-to-max error, and the per-element check of an output that T
// computes in fp32 and rounds once (tests/nn/mixed_precision_test.cpp
// explains the error classes).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace chorus::testing {

// Per storage type: its name, format, and the kOnce / kFew tolerances of
// tests/nn/mixed_precision_test.cpp.
template <typename T>
struct Dtype;
template <>
struct Dtype<bf16> {
  static constexpr const char* kName = "bf16";
  static constexpr int kMant = 7;  // stored mantissa bits
  static constexpr int kEmin = -126;
  static constexpr double kOnce = 1e-2;
  static constexpr double kFew = 2e-2;
};
template <>
struct Dtype<fp16> {
  static constexpr const char* kName = "fp16";
  static constexpr int kMant = 10;
  static constexpr int kEmin = -14;
  static constexpr double kOnce = 1.5e-3;
  static constexpr double kFew = 2.5e-3;
};

// The storage types the typed mixed-precision tests run over.
using StorageTypes = ::testing::Types<bf16, fp16>;

// Rounds v to T in place (v then holds exactly the T values) and returns the T tensor.
template <typename T>
std::vector<T> round_inputs(std::vector<float>& v) {
  std::vector<T> t(v.size());
  convert(t.data(), v.data(), v.size());
  convert(v.data(), t.data(), v.size());
  return t;
}

template <typename T>
std::vector<float> widen(const std::vector<T>& t) {
  std::vector<float> v(t.size());
  convert(v.data(), t.data(), t.size());
  return v;
}

// A T tensor every element of which is NaN: outputs that must be overwritten.
template <typename T>
std::vector<T> nan_filled(size_t n) {
  return std::vector<T>(n, from_f32<T>(std::numeric_limits<float>::quiet_NaN()));
}

// max|got - ref| / max(max|ref|, floor) (NaN anywhere: infinity).
inline double rel_max_err(const std::vector<float>& got, const std::vector<float>& ref,
                          double floor = 1e-30) {
  double err = 0.0, mx = floor;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = std::abs(static_cast<double>(got[i]) - ref[i]);
    err = std::isnan(d) ? INFINITY : std::max(err, d);
    mx = std::max(mx, std::abs(static_cast<double>(ref[i])));
  }
  return err / std::max(mx, 1e-30);
}

// One ulp of T at |x| (T's subnormal spacing below its smallest normal).
template <typename T>
double ulp_of(double x) {
  int e = 0;
  std::frexp(std::abs(x), &e);  // |x| in [2^(e-1), 2^e)
  return std::ldexp(1.0, std::max(e - 1, Dtype<T>::kEmin) - Dtype<T>::kMant);
}

// How far expect_rounded_once lets an element be from the fp32 value, on top
// of 1e-6 of the largest |fp32 value|:
//   kUlp:    one T ulp at the fp32 value (ulp_of<T>);
//   kTwoU:   2u |fp32 value| (u = 2^-(kMant+1), T's unit roundoff): one ulp
//            at the bottom of a binade, up to two at its top, and no floor.
enum class RoundedBound { kUlp, kTwoU };

// For an output that T computes in fp32 from the same values as the fp32
// layer and rounds once: every element is a finite T value within the bound
// of the fp32 result (plus fp32 summation noise, 1e-6 of the largest value),
// nearly all (99%) are exactly round_to<T>(fp32 result), and the rounding is
// visible: a quarter or more differ from the fp32 result (a T path that kept
// fp32 values would fail here).
template <typename T>
void expect_rounded_once(const std::string& what, const std::vector<T>& got_t, const std::vector<float>& ref,
                         RoundedBound bound = RoundedBound::kUlp) {
  ASSERT_EQ(got_t.size(), ref.size()) << what;
  const std::vector<float> got = widen(got_t);
  double mx = 0.0;
  for (float r : ref) mx = std::max(mx, std::abs(static_cast<double>(r)));
  const double two_u = std::ldexp(1.0, -Dtype<T>::kMant);
  size_t n_exact = 0, n_differ = 0, n_far = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_EQ(from_f32<T>(got[i]).bits, got_t[i].bits) << what << "[" << i << "] is not a T value";
    ASSERT_TRUE(std::isfinite(got[i])) << what << "[" << i << "]";
    n_exact += got[i] == round_to<T>(ref[i]);
    n_differ += got[i] != ref[i];
    const double d = std::abs(static_cast<double>(got[i]) - ref[i]);
    const double lim =
        bound == RoundedBound::kUlp ? ulp_of<T>(ref[i]) + 1e-6 * mx : two_u * std::abs(ref[i]) + 1e-6 * mx;
    if (!(d <= lim) && ++n_far <= 5)
      ADD_FAILURE() << what << "[" << i << "]: " << got[i] << " vs fp32 " << ref[i] << ", beyond the bound";
  }
  EXPECT_EQ(n_far, 0u) << what;
  EXPECT_GE(n_exact, ref.size() - ref.size() / 100) << what << ": not round_to<T>(fp32 result)";
  EXPECT_GE(n_differ, ref.size() / 4) << what << ": hardly any element differs from fp32: not rounded to T?";
}

}  // namespace chorus::testing
