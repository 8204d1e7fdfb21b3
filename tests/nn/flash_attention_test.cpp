// flash_attention_forward / flash_attention_backward against the attention
// that saves the probabilities (nn/attention.h), a double-precision reference,
// central finite differences, and, for bf16 / fp16, the fp32 flash kernel on
// the same (rounded) inputs.
#include "nn/flash_attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "backend/cpu/ops.h"
#include "core/dtype.h"
#include "core/error.h"
#include "grad_check.h"
#include "mixed_check.h"
#include "nn/attention.h"

namespace chorus::nn {
namespace {

using namespace chorus::testing;  // grad_check.h, mixed_check.h

struct Shape {
  int B, T, C, NH;
  size_t n_qkv() const { return static_cast<size_t>(B) * T * 3 * C; }
  size_t n_out() const { return static_cast<size_t>(B) * T * C; }
  size_t n_lse() const { return static_cast<size_t>(B) * NH * T; }
  size_t n_att() const { return static_cast<size_t>(B) * NH * T * T; }
  std::string str() const {
    return "B=" + std::to_string(B) + " T=" + std::to_string(T) + " C=" + std::to_string(C) +
           " NH=" + std::to_string(NH);
  }
};

// T = 1; inside one tile (5; 67: three diagonal chunks, the last partial);
// just past one tile (130); two whole tiles; three tiles, the last partial.
// Head sizes 16, 12 (not a multiple of the vector width) and 8; one and
// several heads.
const Shape kShapes[] = {{2, 1, 16, 1},
                         {2, 5, 48, 3},
                         {2, 67, 36, 3},
                         {2, 130, 16, 1},
                         {2, 130, 48, 3},
                         {1, 2 * kFlashTile, 24, 2},
                         {1, 2 * kFlashTile + 3, 16, 2}};

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Causal attention in double: out (B, T, C) and lse (B, NH, T); mag (B, NH, T)
// the largest sum_i |q_i k_i| / sqrt(hs) of each row, the scale of the fp32
// rounding error of its scores.
void naive_attention(const std::vector<float>& qkv, const Shape& s, std::vector<double>& out,
                     std::vector<double>& lse, std::vector<double>& mag) {
  const int hs = s.C / s.NH, T = s.T, C = s.C;
  out.assign(s.n_out(), 0.0);
  lse.assign(s.n_lse(), 0.0);
  mag.assign(s.n_lse(), 0.0);
  std::vector<double> p(T);
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.NH; ++h)
      for (int t = 0; t < T; ++t) {
        const float* q = &qkv[(static_cast<size_t>(b) * T + t) * 3 * C + h * hs];
        const size_t row = (static_cast<size_t>(b) * s.NH + h) * T + t;
        double mx = -1e300;
        for (int u = 0; u <= t; ++u) {
          const float* k = &qkv[(static_cast<size_t>(b) * T + u) * 3 * C + C + h * hs];
          double d = 0.0, a = 0.0;
          for (int i = 0; i < hs; ++i) {
            d += static_cast<double>(q[i]) * k[i];
            a += std::abs(static_cast<double>(q[i]) * k[i]);
          }
          p[u] = d / std::sqrt(static_cast<double>(hs));
          mx = std::max(mx, p[u]);
          mag[row] = std::max(mag[row], a / std::sqrt(static_cast<double>(hs)));
        }
        double z = 0.0;
        for (int u = 0; u <= t; ++u) z += (p[u] = std::exp(p[u] - mx));
        lse[row] = mx + std::log(z);
        for (int u = 0; u <= t; ++u) {
          const float* v = &qkv[(static_cast<size_t>(b) * T + u) * 3 * C + 2 * C + h * hs];
          for (int i = 0; i < hs; ++i)
            out[(static_cast<size_t>(b) * T + t) * C + h * hs + i] += p[u] / z * v[i];
        }
      }
}

// Output and lse equal the probability-saving kernel's output and the double
// reference; every element is written (outputs start as NaN). tol: relative to
// the largest output (fp32 scores carry an absolute error ~ 1e-7 |score|).
void check_forward(const Shape& s, float scale, double tol = 1e-5) {
  SCOPED_TRACE(s.str());
  const auto qkv = random_vector(s.n_qkv(), 11 + s.T, scale);
  std::vector<float> out(s.n_out(), kNaN), lse(s.n_lse(), kNaN);
  flash_attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.C, s.NH);
  std::vector<float> out_ref(s.n_out()), att(s.n_att());
  attention_forward(out_ref.data(), att.data(), qkv.data(), s.B, s.T, s.C, s.NH);
  const double err = rel_max_err(out, out_ref);
  std::printf("[ flash    ] forward %-24s scale %4.0f: out rel-to-max err vs attention_forward %.2e\n",
              s.str().c_str(), scale, err);
  EXPECT_LE(err, tol);
  std::vector<double> out_d, lse_d, mag;
  naive_attention(qkv, s, out_d, lse_d, mag);
  double out_mx = 0.0;
  for (double x : out_d) out_mx = std::max(out_mx, std::abs(x));
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], out_d[i], 2 * tol * std::max(1.0, out_mx)) << i;
  // lse: fp32 scores, a sum of exponentials and one log
  for (size_t i = 0; i < lse.size(); ++i)
    ASSERT_NEAR(lse[i], lse_d[i], 1e-6 * (1.0 + std::abs(lse_d[i]) + mag[i])) << "lse of row " << i;
}

TEST(FlashAttention, ForwardMatchesAttentionForwardAndDoubleReference) {
  for (const Shape& s : kShapes) check_forward(s, 2.0f);
}

// Scores in the hundreds: exp without the running max would overflow, and the
// max of a row moves by far more than 88 (e^88 ~ FLT_MAX) from tile to tile.
// The fp32 scores themselves are then only good to ~1e-4.
TEST(FlashAttention, ForwardStableForLargeScores) {
  check_forward({2, 130, 48, 3}, 20.0f, 2e-4);
  check_forward({1, 2 * kFlashTile + 3, 16, 1}, 40.0f, 2e-4);
}

// dqkv equals the probability-saving kernel's gradient on the same data.
void check_backward_vs_attention(const Shape& s) {
  SCOPED_TRACE(s.str());
  const auto qkv = random_vector(s.n_qkv(), 21 + s.T, 1.5f);
  const auto dout = random_vector(s.n_out(), 22 + s.T);
  std::vector<float> out(s.n_out()), lse(s.n_lse()), dqkv(s.n_qkv(), kNaN);
  flash_attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.C, s.NH);
  flash_attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), s.B, s.T, s.C, s.NH);
  std::vector<float> out_ref(s.n_out()), att(s.n_att()), dqkv_ref(s.n_qkv(), kNaN);
  attention_forward(out_ref.data(), att.data(), qkv.data(), s.B, s.T, s.C, s.NH);
  attention_backward(dqkv_ref.data(), dout.data(), qkv.data(), att.data(), s.B, s.T, s.C, s.NH);
  // relative to the largest gradient element: with T = 1, dq and dk are 0 up to rounding
  double mx = 0.0;
  for (float g : dqkv_ref) mx = std::max(mx, std::abs(static_cast<double>(g)));
  const char* parts[] = {"dq", "dk", "dv"};
  for (int part = 0; part < 3; ++part) {
    std::vector<float> got, ref;
    for (size_t r = 0; r < static_cast<size_t>(s.B) * s.T; ++r)
      for (int c = 0; c < s.C; ++c) {
        got.push_back(dqkv[r * 3 * s.C + part * s.C + c]);
        ref.push_back(dqkv_ref[r * 3 * s.C + part * s.C + c]);
      }
    const double err = rel_max_err(got, ref, mx);
    std::printf("[ flash    ] backward %-23s %s rel-to-max err vs attention_backward %.2e\n", s.str().c_str(),
                parts[part], err);
    EXPECT_LE(err, 1e-5) << parts[part];
  }
}

TEST(FlashAttention, BackwardMatchesAttentionBackward) {
  for (const Shape& s : kShapes) check_backward_vs_attention(s);
}

void check_backward_fd(const Shape& s, size_t max_checks) {
  auto qkv = random_vector(s.n_qkv(), 2, 1.5f);
  const auto wout = random_vector(s.n_out(), 3);
  std::vector<float> out(s.n_out()), lse(s.n_lse());
  auto loss = [&] {
    flash_attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.C, s.NH);
    return weighted_sum(out.data(), wout.data(), out.size());
  };
  loss();
  std::vector<float> dqkv(s.n_qkv(), kNaN);
  flash_attention_backward(dqkv.data(), wout.data(), qkv.data(), out.data(), lse.data(), s.B, s.T, s.C, s.NH);
  chorus::testing::GradCheckOptions opt;
  opt.eps = 3e-3;
  opt.atol = 2e-3;
  opt.max_checks = max_checks;
  expect_grad_close("dqkv", qkv.data(), dqkv.data(), qkv.size(), loss, opt);
}

TEST(FlashAttention, BackwardMatchesFiniteDifferences) { check_backward_fd({2, 6, 8, 2}, SIZE_MAX); }
// Three key tiles, the last partial: off-diagonal tiles, accumulation across tiles.
TEST(FlashAttention, BackwardAcrossTilesMatchesFiniteDifferences) {
  check_backward_fd({1, 2 * kFlashTile + 3, 8, 2}, 800);
}

// Each (b, h, tile) task computes the same bits on whichever thread runs it.
TEST(FlashAttention, SameBitsForAnyThreadCount) {
  const Shape s{2, kFlashTile + 37, 48, 3};
  const auto qkv = random_vector(s.n_qkv(), 41, 2.0f), dout = random_vector(s.n_out(), 42);
  const int saved = backend::cpu::n_threads();
  std::vector<float> outs[2], lses[2], dqkvs[2];
  for (int i = 0; i < 2; ++i) {
    backend::cpu::set_n_threads(i == 0 ? 1 : 3);
    outs[i].assign(s.n_out(), kNaN);
    lses[i].assign(s.n_lse(), kNaN);
    dqkvs[i].assign(s.n_qkv(), kNaN);
    flash_attention_forward(outs[i].data(), lses[i].data(), qkv.data(), s.B, s.T, s.C, s.NH);
    flash_attention_backward(dqkvs[i].data(), dout.data(), qkv.data(), outs[i].data(), lses[i].data(), s.B,
                             s.T, s.C, s.NH);
  }
  backend::cpu::set_n_threads(saved);
  for (size_t i = 0; i < s.n_out(); ++i) ASSERT_EQ(outs[0][i], outs[1][i]) << "out " << i;
  for (size_t i = 0; i < s.n_lse(); ++i) ASSERT_EQ(lses[0][i], lses[1][i]) << "lse " << i;
  for (size_t i = 0; i < s.n_qkv(); ++i) ASSERT_EQ(dqkvs[0][i], dqkvs[1][i]) << "dqkv " << i;
}

TEST(FlashAttention, RejectsBadShapes) {
  std::vector<float> buf(4096, 0.0f), lse(256);
  const float* p = buf.data();
  EXPECT_THROW(flash_attention_forward(buf.data(), lse.data(), p, 1, 4, 9, 2), Error);  // C % NH != 0
  EXPECT_THROW(flash_attention_forward(buf.data(), lse.data(), p, 1, 0, 8, 2), Error);  // T = 0
  EXPECT_THROW(flash_attention_backward(buf.data(), p, p, p, lse.data(), 1, 4, 8, 0), Error);
}

// ---- bf16 / fp16 ----
// Error classes of tests/nn/mixed_precision_test.cpp (Dtype<T>, u = unit
// roundoff of T): kOnce for results computed in fp32 from the same values and
// rounded once (~2.5u, 3u), kFew for results whose fp32 reference differs by
// one more rounding (the gradients: the T path's D reads the rounded out).

// The dq, dk or dv columns of a (N, 3C) gradient.
std::vector<float> part_of(const std::vector<float>& dqkv, int C, int part) {
  std::vector<float> r;
  for (size_t row = 0; row < dqkv.size() / (3 * C); ++row)
    for (int c = 0; c < C; ++c) r.push_back(dqkv[row * 3 * C + part * C + c]);
  return r;
}

// got (T values) is round_to<T>(ref) for nearly every element.
template <typename T>
void expect_mostly_rounded(const std::string& what, const std::vector<float>& got,
                           const std::vector<float>& ref) {
  size_t n_exact = 0;
  for (size_t i = 0; i < ref.size(); ++i) n_exact += got[i] == round_to<T>(ref[i]);
  EXPECT_GE(n_exact, ref.size() - ref.size() / 100) << what << ": not round_to<T>(fp32 result)";
}

template <typename T>
class FlashAttentionMixed : public ::testing::Test {};
TYPED_TEST_SUITE(FlashAttentionMixed, StorageTypes);

TYPED_TEST(FlashAttentionMixed, MatchesFp32OnRoundedInputs) {
  using T = TypeParam;
  const char* tname = Dtype<T>::kName;
  const Shape s{2, 2 * kFlashTile + 5, 48, 3};
  auto qkv = random_vector(s.n_qkv(), 31, 2.0f), dout = random_vector(s.n_out(), 32);
  const auto qkvt = round_inputs<T>(qkv), doutt = round_inputs<T>(dout);

  std::vector<float> out(s.n_out()), lse(s.n_lse());
  flash_attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.C, s.NH);
  auto outt = nan_filled<T>(s.n_out());
  std::vector<float> lset(s.n_lse(), kNaN);
  flash_attention_forward(outt.data(), lset.data(), qkvt.data(), s.B, s.T, s.C, s.NH);
  const auto outw = widen(outt);
  const double err_out = rel_max_err(outw, out), err_lse = rel_max_err(lset, lse);
  std::printf("[ flash    ] %s out err %.2e (tol %.1e), lse err %.2e\n", tname, err_out, Dtype<T>::kOnce,
              err_lse);
  EXPECT_LE(err_out, Dtype<T>::kOnce);
  expect_mostly_rounded<T>("out", outw, out);
  EXPECT_LE(err_lse, 1e-6);  // fp32 from identical inputs

  // Against the fp32 kernel on fp32 out: one more rounding (out in D).
  std::vector<float> dqkv(s.n_qkv(), kNaN);
  flash_attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), s.B, s.T, s.C, s.NH);
  auto dqkvt = nan_filled<T>(s.n_qkv());
  flash_attention_backward(dqkvt.data(), doutt.data(), qkvt.data(), outt.data(), lset.data(), s.B, s.T, s.C,
                           s.NH);
  const auto dqkvw = widen(dqkvt);
  // Against the fp32 kernel given the rounded out the T path stored: the same
  // fp32 arithmetic, so only the final rounding of the gradients differs.
  std::vector<float> dqkv_r(s.n_qkv(), kNaN);
  flash_attention_backward(dqkv_r.data(), dout.data(), qkv.data(), outw.data(), lset.data(), s.B, s.T, s.C,
                           s.NH);
  const char* parts[] = {"dq", "dk", "dv"};
  for (int part = 0; part < 3; ++part) {
    const auto got = part_of(dqkvw, s.C, part);
    const double err = rel_max_err(got, part_of(dqkv, s.C, part));
    const double err_r = rel_max_err(got, part_of(dqkv_r, s.C, part));
    std::printf("[ flash    ] %s %s err %.2e (tol %.1e), vs fp32 on the stored out %.2e (tol %.1e)\n", tname,
                parts[part], err, Dtype<T>::kFew, err_r, Dtype<T>::kOnce);
    EXPECT_LE(err, Dtype<T>::kFew) << parts[part];
    EXPECT_LE(err_r, Dtype<T>::kOnce) << parts[part];
    expect_mostly_rounded<T>(parts[part], got, part_of(dqkv_r, s.C, part));
  }
}

}  // namespace
}  // namespace chorus::nn
