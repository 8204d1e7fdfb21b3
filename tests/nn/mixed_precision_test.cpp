// Every layer in bf16 and fp16 against the same layer in fp32 on the same input
// values: the fp32 inputs are rounded to T once, and the fp32 reference runs on
// those rounded values (to_f32 of the T tensors), so the only differences are
// the roundings the T path itself does (its outputs, and intermediates it
// stores in T such as attention's probabilities).
//
// Error metric, per tensor: max|got - ref| / max(max|ref|, tiny).
// Tolerances, from the unit roundoff u (half an ulp relative to the value):
//   bf16: 8 significant bits, u = 2^-8  ~ 3.9e-3
//   fp16: 11 significant bits, u = 2^-11 ~ 4.9e-4
//   kOnce  (outputs computed in fp32 from identical inputs and rounded once
//          into T: error <= u |value| <= u max|ref|, plus fp32 noise):
//          bf16 1e-2, fp16 1.5e-3 (~2.5u and ~3u). These outputs also get a
//          per-element check: within one T ulp of the fp32 value, and equal to
//          round_to<T>(fp32 value) almost everywhere.
//   kFew   (results that pass through an intermediate rounded to T: attention
//          uses the T-rounded probabilities P in P @ v and in backward, so
//          the error is u * sum_u P|v| ~ u max|v|, and max|out| < max|v|; the
//          score gradient P * (dP - sum P dP) can lose a few bits to
//          cancellation): bf16 2e-2, fp16 2.5e-3 (~5u, 2.5 ulps).
//   kParam (fp32 results from identical inputs: parameter gradients,
//          LayerNorm mean/rstd, losses, lse; only fp32 summation order can
//          differ): 1e-5 for both. A 16-bit accumulator would miss this by
//          orders of magnitude.
// Parameter gradients must also ACCUMULATE (+=) in fp32.
// The speech layers use the same classes: conv1d (im2col copies T values
// exactly, so out and din are kOnce, dw/db kParam), CTC (loss kParam, dlogits
// kOnce), add_positions (kOnce), and padded / cross attention (as causal
// attention: probabilities kOnce, out and gradients kFew).
//
// Finite-difference checks stay on fp32 (tests/nn/*_test.cpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "core/rng.h"
#include "grad_check.h"
#include "mixed_check.h"
#include "nn/attention.h"
#include "nn/conv1d.h"
#include "nn/ctc.h"
#include "nn/embedding.h"
#include "nn/gelu.h"
#include "nn/layernorm.h"
#include "nn/matmul.h"
#include "nn/positions.h"
#include "nn/softmax_cross_entropy.h"

namespace chorus::nn {
namespace {

using namespace chorus::testing;  // grad_check.h, mixed_check.h

constexpr double kParam = 1e-5;

// Relative-to-max error within tol; prints it for the record.
void expect_close(const std::string& what, const std::vector<float>& got, const std::vector<float>& ref,
                  double tol) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  const double err = rel_max_err(got, ref);
  std::printf("[ mixed    ] %-36s rel-to-max err %.3e (tol %.1e)\n", what.c_str(), err, tol);
  ::testing::Test::RecordProperty(what, std::to_string(err));
  EXPECT_LE(err, tol) << what;
}

// dst holds init + 2 * grad (two backward calls onto init), in fp32.
void expect_accumulated(const std::string& what, const std::vector<float>& acc, const std::vector<float>& init,
                        const std::vector<float>& grad) {
  std::vector<float> want(init.size());
  for (size_t i = 0; i < init.size(); ++i) want[i] = init[i] + 2.0f * grad[i];
  // Two fp32 additions onto init: a few fp32 ulps of the magnitude.
  EXPECT_LE(rel_max_err(acc, want), 1e-6) << what << " does not accumulate init + 2 * grad in fp32";
}

template <typename T>
std::string name(const char* layer, const char* tensor) {
  return std::string(layer) + " " + tensor + " " + Dtype<T>::kName;
}

template <typename T>
class MixedPrecision : public ::testing::Test {};
TYPED_TEST_SUITE(MixedPrecision, StorageTypes);

TYPED_TEST(MixedPrecision, MatmulWithBiasAndResidual) {
  using T = TypeParam;
  const int N = 71, C = 96, OC = 80;
  auto x = random_vector(N * C, 1), w = random_vector(OC * C, 2, 0.2f), b = random_vector(OC, 3);
  auto res = random_vector(N * OC, 4), dout = random_vector(N * OC, 5);
  const auto xt = round_inputs<T>(x), wt = round_inputs<T>(w), bt = round_inputs<T>(b);
  const auto rest = round_inputs<T>(res), doutt = round_inputs<T>(dout);

  std::vector<float> out(N * OC);
  matmul_forward(out.data(), x.data(), w.data(), b.data(), N, C, OC, res.data());
  std::vector<T> outt(N * OC);
  matmul_forward(outt.data(), xt.data(), wt.data(), bt.data(), N, C, OC, rest.data());
  expect_close(name<T>("matmul", "out"), widen(outt), out, Dtype<T>::kOnce);
  expect_rounded_once(name<T>("matmul", "out"), outt, out);

  // out aliasing residual gives the same bits.
  std::vector<T> inplace = rest;
  matmul_forward(inplace.data(), xt.data(), wt.data(), bt.data(), N, C, OC, inplace.data());
  for (int i = 0; i < N * OC; ++i) ASSERT_EQ(inplace[i].bits, outt[i].bits) << i;
  // The fp32 variant is the same sum before rounding.
  std::vector<float> acc(N * OC);
  matmul_forward_f32(acc.data(), xt.data(), wt.data(), bt.data(), N, C, OC, rest.data());
  expect_close(name<T>("matmul", "out_f32"), acc, out, kParam);
  std::vector<T> acc_t(N * OC);
  convert(acc_t.data(), acc.data(), acc.size());
  for (int i = 0; i < N * OC; ++i) ASSERT_EQ(acc_t[i].bits, outt[i].bits) << i;

  std::vector<float> dx(N * C, NAN), dw(OC * C, 0.0f), db(OC, 0.0f);
  matmul_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), N, C, OC);
  auto dxt = nan_filled<T>(N * C);
  std::vector<float> dwt(OC * C, 0.0f), dbt(OC, 0.0f);
  matmul_backward(dxt.data(), dwt.data(), dbt.data(), doutt.data(), xt.data(), wt.data(), N, C, OC);
  expect_close(name<T>("matmul", "dinp"), widen(dxt), dx, Dtype<T>::kOnce);
  expect_rounded_once(name<T>("matmul", "dinp"), dxt, dx);
  expect_close(name<T>("matmul", "dweight"), dwt, dw, kParam);
  expect_close(name<T>("matmul", "dbias"), dbt, db, kParam);

  std::vector<float> dx_acc(N * C);
  std::vector<float> none_w(OC * C, 0.0f), none_b(OC, 0.0f);
  matmul_backward_f32(dx_acc.data(), none_w.data(), none_b.data(), doutt.data(), xt.data(), wt.data(), N, C, OC);
  expect_close(name<T>("matmul", "dinp_f32"), dx_acc, dx, kParam);

  // Parameter gradients accumulate in fp32 (dinp skipped).
  const auto dw0 = random_vector(OC * C, 6, 10.0f), db0 = random_vector(OC, 7, 10.0f);
  std::vector<float> dw2 = dw0, db2 = db0;
  for (int k = 0; k < 2; ++k)
    matmul_backward<T>(nullptr, dw2.data(), db2.data(), doutt.data(), xt.data(), wt.data(), N, C, OC);
  expect_accumulated("matmul dweight", dw2, dw0, dwt);
  expect_accumulated("matmul dbias", db2, db0, dbt);
}

TYPED_TEST(MixedPrecision, LayerNormWithResidualGradient) {
  using T = TypeParam;
  const int N = 70, C = 256;  // N * C above the parallel threshold; 4 column blocks of 64
  auto x = random_vector(N * C, 11, 2.0f), w = random_vector(C, 12, 0.5f), b = random_vector(C, 13);
  for (int i = 0; i < N * C; ++i) x[i] += 0.25f * static_cast<float>(i / C % 5);  // row offsets
  for (auto& g : w) g += 1.0f;
  auto dout = random_vector(N * C, 14), dres = random_vector(N * C, 15);
  const auto xt = round_inputs<T>(x), wt = round_inputs<T>(w), bt = round_inputs<T>(b);
  const auto doutt = round_inputs<T>(dout), drest = round_inputs<T>(dres);

  std::vector<float> out(N * C), mean(N), rstd(N);
  layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
  auto outt = nan_filled<T>(N * C);
  std::vector<float> meant(N), rstdt(N);
  layernorm_forward(outt.data(), meant.data(), rstdt.data(), xt.data(), wt.data(), bt.data(), N, C);
  expect_close(name<T>("layernorm", "out"), widen(outt), out, Dtype<T>::kOnce);
  expect_rounded_once(name<T>("layernorm", "out"), outt, out);
  expect_close(name<T>("layernorm", "mean"), meant, mean, kParam);
  expect_close(name<T>("layernorm", "rstd"), rstdt, rstd, kParam);

  // dinp aliases dresidual (in place), as in a pre-LN block.
  std::vector<float> dx = dres, dw(C, 0.0f), db(C, 0.0f);
  layernorm_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), mean.data(), rstd.data(), N,
                     C, dx.data());
  std::vector<T> dxt = drest;
  std::vector<float> dwt(C, 0.0f), dbt(C, 0.0f);
  layernorm_backward(dxt.data(), dwt.data(), dbt.data(), doutt.data(), xt.data(), wt.data(), meant.data(),
                     rstdt.data(), N, C, dxt.data());
  expect_close(name<T>("layernorm", "dinp"), widen(dxt), dx, Dtype<T>::kOnce);
  expect_rounded_once(name<T>("layernorm", "dinp"), dxt, dx);
  expect_close(name<T>("layernorm", "dweight"), dwt, dw, kParam);
  expect_close(name<T>("layernorm", "dbias"), dbt, db, kParam);

  // Without dresidual: the gradient alone, overwriting.
  std::vector<float> dx0(N * C), unused_w(C), unused_b(C);
  layernorm_backward(dx0.data(), unused_w.data(), unused_b.data(), dout.data(), x.data(), w.data(), mean.data(),
                     rstd.data(), N, C);
  auto dx0t = nan_filled<T>(N * C);
  layernorm_backward(dx0t.data(), unused_w.data(), unused_b.data(), doutt.data(), xt.data(), wt.data(),
                     meant.data(), rstdt.data(), N, C);
  expect_close(name<T>("layernorm", "dinp (no residual)"), widen(dx0t), dx0, Dtype<T>::kOnce);

  const auto dw0 = random_vector(C, 16, 10.0f), db0 = random_vector(C, 17, 10.0f);
  std::vector<float> dw2 = dw0, db2 = db0;
  for (int k = 0; k < 2; ++k) {
    auto scratch = nan_filled<T>(N * C);
    layernorm_backward(scratch.data(), dw2.data(), db2.data(), doutt.data(), xt.data(), wt.data(), meant.data(),
                       rstdt.data(), N, C);
  }
  expect_accumulated("layernorm dweight", dw2, dw0, dwt);
  expect_accumulated("layernorm dbias", db2, db0, dbt);
}

TYPED_TEST(MixedPrecision, Gelu) {
  using T = TypeParam;
  const size_t n = 5 * 4096 + 13;  // more than 4 chunks (parallel) and a scalar tail
  auto x = random_vector(n, 21, 4.0f), dout = random_vector(n, 22);
  const auto xt = round_inputs<T>(x), doutt = round_inputs<T>(dout);

  std::vector<float> out(n);
  gelu_forward(out.data(), x.data(), n);
  auto outt = nan_filled<T>(n);
  gelu_forward(outt.data(), xt.data(), n);
  expect_close(name<T>("gelu", "out"), widen(outt), out, Dtype<T>::kOnce);
  expect_rounded_once(name<T>("gelu", "out"), outt, out);
  std::vector<T> inplace = xt;  // out aliasing inp
  gelu_forward(inplace.data(), inplace.data(), n);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(inplace[i].bits, outt[i].bits) << i;

  std::vector<float> dx(n);
  gelu_backward(dx.data(), x.data(), dout.data(), n);
  std::vector<T> dxt = doutt;  // dinp aliasing dout
  gelu_backward(dxt.data(), xt.data(), dxt.data(), n);
  expect_close(name<T>("gelu", "dinp"), widen(dxt), dx, Dtype<T>::kOnce);
  expect_rounded_once(name<T>("gelu", "dinp"), dxt, dx);
}

TYPED_TEST(MixedPrecision, AttentionAcrossRowBlocks) {
  using T = TypeParam;
  const int B = 2, Tn = 2 * kAttnBlock + 5, C = 48, NH = 3;
  const size_t n_qkv = static_cast<size_t>(B) * Tn * 3 * C, n_out = static_cast<size_t>(B) * Tn * C;
  const size_t n_att = static_cast<size_t>(B) * NH * Tn * Tn;
  auto qkv = random_vector(n_qkv, 31, 2.0f), dout = random_vector(n_out, 32);
  const auto qkvt = round_inputs<T>(qkv), doutt = round_inputs<T>(dout);

  std::vector<float> out(n_out), att(n_att, 0.0f);
  attention_forward(out.data(), att.data(), qkv.data(), B, Tn, C, NH);
  auto outt = nan_filled<T>(n_out);
  auto attt = nan_filled<T>(n_att);
  attention_forward(outt.data(), attt.data(), qkvt.data(), B, Tn, C, NH);

  // Probabilities: computed in fp32 from the same scores, rounded once; zeros
  // after the diagonal up to the end of the row block.
  std::vector<float> p, pt;
  std::vector<T> p_t;
  for (int bh = 0; bh < B * NH; ++bh) {
    for (int t = 0; t < Tn; ++t) {
      const size_t row = (static_cast<size_t>(bh) * Tn + t) * Tn;
      for (int u = 0; u <= t; ++u) {
        p.push_back(att[row + u]);
        p_t.push_back(attt[row + u]);
      }
      const int block_end = std::min(Tn, (t / kAttnBlock + 1) * kAttnBlock);
      for (int u = t + 1; u < block_end; ++u) ASSERT_EQ(attt[row + u].bits, 0u) << "att row " << t << " col " << u;
    }
  }
  expect_close(name<T>("attention", "att"), widen(p_t), p, Dtype<T>::kOnce);
  expect_rounded_once(name<T>("attention", "att"), p_t, p);
  // The output uses the rounded probabilities: a few ulps.
  expect_close(name<T>("attention", "out"), widen(outt), out, Dtype<T>::kFew);
  const auto outw = widen(outt);
  size_t n_differ = 0;
  for (size_t i = 0; i < n_out; ++i) n_differ += outw[i] != out[i];
  EXPECT_GE(n_differ, n_out / 2) << "attention output hardly differs from fp32";

  std::vector<float> dqkv(n_qkv, NAN);
  attention_backward(dqkv.data(), dout.data(), qkv.data(), att.data(), B, Tn, C, NH);
  auto dqkvt = nan_filled<T>(n_qkv);
  attention_backward(dqkvt.data(), doutt.data(), qkvt.data(), attt.data(), B, Tn, C, NH);
  const auto dqkvw = widen(dqkvt);
  const char* parts[] = {"dq", "dk", "dv"};
  for (int part = 0; part < 3; ++part) {
    std::vector<float> got, ref;
    for (size_t r = 0; r < static_cast<size_t>(B) * Tn; ++r)
      for (int c = 0; c < C; ++c) {
        got.push_back(dqkvw[r * 3 * C + part * C + c]);
        ref.push_back(dqkv[r * 3 * C + part * C + c]);
      }
    expect_close(name<T>("attention", parts[part]), got, ref, Dtype<T>::kFew);
  }
}

TYPED_TEST(MixedPrecision, SoftmaxCrossEntropyPaddedAndIgnored) {
  using T = TypeParam;
  const int N = 41, V = 300, Vp = 320;
  auto logits = random_vector(static_cast<size_t>(N) * Vp, 41, 4.0f);
  for (int r = 0; r < N; ++r)
    for (int v = V; v < Vp; ++v) logits[static_cast<size_t>(r) * Vp + v] = 1000.0f;  // padding: never part of the softmax
  Rng rng(42, 1);
  std::vector<int32_t> targets(N);
  for (auto& t : targets) t = static_cast<int32_t>(rng.below(V));
  targets[3] = -1;
  targets[N - 1] = -1;
  targets[7] = V - 1;
  const auto logitst = round_inputs<T>(logits);

  std::vector<float> losses(N), lse(N), lossest(N), lset(N);
  softmax_cross_entropy_forward(losses.data(), lse.data(), logits.data(), targets.data(), N, V, Vp);
  softmax_cross_entropy_forward(lossest.data(), lset.data(), logitst.data(), targets.data(), N, V, Vp);
  expect_close(name<T>("softmax_ce", "losses"), lossest, losses, kParam);
  expect_close(name<T>("softmax_ce", "lse"), lset, lse, kParam);
  EXPECT_EQ(lossest[3], 0.0f);
  EXPECT_EQ(lossest[N - 1], 0.0f);

  const float dloss = 1.0f / N;
  std::vector<float> dlogits(static_cast<size_t>(N) * Vp, NAN);
  softmax_cross_entropy_backward(dlogits.data(), logits.data(), lse.data(), targets.data(), dloss, N, V, Vp);
  std::vector<T> dlogitst = logitst;  // in place: dlogits aliasing logits, as the LM head does
  softmax_cross_entropy_backward(dlogitst.data(), dlogitst.data(), lset.data(), targets.data(), dloss, N, V, Vp);
  for (int r = 0; r < N; ++r)
    for (int v = 0; v < Vp; ++v) {
      const size_t i = static_cast<size_t>(r) * Vp + v;
      if (v >= V || targets[r] < 0) {
        ASSERT_EQ(dlogitst[i].bits, 0u) << "row " << r << " col " << v;
      }
    }
  // The gradient is the one tensor of this layer that the rounding shows in.
  expect_close(name<T>("softmax_ce", "dlogits"), widen(dlogitst), dlogits, Dtype<T>::kOnce);
  // Row sums of the gradient are 0 in exact arithmetic; each element is off by
  // at most u |d| and sum |d| <= 2 dloss, so a rounded row sums to <= 2u dloss
  // (4u with margin, plus fp32 noise).
  const auto dl = widen(dlogitst);
  std::vector<float> valid_ref, valid_got;
  std::vector<T> valid_t;
  for (int r = 0; r < N; ++r) {
    if (targets[r] < 0) continue;
    double s = 0.0;
    for (int v = 0; v < V; ++v) {
      const size_t i = static_cast<size_t>(r) * Vp + v;
      s += dl[i];
      valid_ref.push_back(dlogits[i]);
      valid_t.push_back(dlogitst[i]);
    }
    EXPECT_LE(std::abs(s), (4.0 * std::ldexp(1.0, -Dtype<T>::kMant - 1) + 1e-5) * dloss) << "row " << r;
  }
  expect_rounded_once(name<T>("softmax_ce", "dlogits"), valid_t, valid_ref);
}

TYPED_TEST(MixedPrecision, EncoderWithRepeatedTokens) {
  using T = TypeParam;
  const int B = 4, Tn = 70, C = 130, V = 13, ctx = Tn + 3;  // B*T*C above the parallel threshold
  Rng rng(51, 2);
  std::vector<int32_t> tokens(B * Tn);
  for (auto& t : tokens) t = static_cast<int32_t>(rng.below(V));  // 280 tokens over 13 ids: many repeats
  tokens[0] = tokens[1] = tokens[2] = 4;
  auto wte = random_vector(V * C, 52), wpe = random_vector(ctx * C, 53, 0.5f);
  auto dout = random_vector(static_cast<size_t>(B) * Tn * C, 54);
  const auto wtet = round_inputs<T>(wte), wpet = round_inputs<T>(wpe), doutt = round_inputs<T>(dout);

  std::vector<float> out(static_cast<size_t>(B) * Tn * C);
  embedding_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, Tn, C);
  auto outt = nan_filled<T>(out.size());
  embedding_forward(outt.data(), tokens.data(), wtet.data(), wpet.data(), B, Tn, C);
  expect_close(name<T>("embedding", "out"), widen(outt), out, Dtype<T>::kOnce);
  expect_rounded_once(name<T>("embedding", "out"), outt, out);

  std::vector<float> dwte(V * C, 0.0f), dwpe(ctx * C, 0.0f), dwtet(V * C, 0.0f), dwpet(ctx * C, 0.0f);
  embedding_backward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, Tn, C);
  embedding_backward(dwtet.data(), dwpet.data(), doutt.data(), tokens.data(), B, Tn, C);
  // The same fp32 additions in the same order on the same values.
  expect_close(name<T>("embedding", "dwte"), dwtet, dwte, kParam);
  expect_close(name<T>("embedding", "dwpe"), dwpet, dwpe, kParam);
  for (int i = Tn * C; i < ctx * C; ++i) ASSERT_EQ(dwpet[i], 0.0f) << "dwpe row past T";

  const auto dwte0 = random_vector(V * C, 55, 10.0f), dwpe0 = random_vector(ctx * C, 56, 10.0f);
  std::vector<float> dwte2 = dwte0, dwpe2 = dwpe0;
  for (int k = 0; k < 2; ++k) embedding_backward(dwte2.data(), dwpe2.data(), doutt.data(), tokens.data(), B, Tn, C);
  expect_accumulated("embedding dwte", dwte2, dwte0, dwtet);
  expect_accumulated("embedding dwpe", dwpe2, dwpe0, dwpet);
}


// Bidirectional self-attention with padded frames on a fused qkv, and
// cross-attention with q (B, Tq, C) against a fused k|v (B, Tk, 2C).
TYPED_TEST(MixedPrecision, MhaPaddedAndCross) {
  using T = TypeParam;
  const int B = 3, C = 48, NH = 3;
  const std::vector<int> lens{45, 17, 1};
  struct Layout {
    const char* what;
    int Tq, Tk;
    size_t qs, kvs, k_off, v_off;
    bool self;
  };
  for (const Layout& l : {Layout{"mha-encoder", 45, 45, 3 * C, 3 * C, C, 2 * C, true},
                          Layout{"mha-cross", 2 * kAttnBlock + 5, 45, C, 2 * C, 0, C, false}}) {
    const size_t n_q = static_cast<size_t>(B) * l.Tq * l.qs, n_kv = l.self ? 0 : static_cast<size_t>(B) * l.Tk * l.kvs;
    const size_t n_out = static_cast<size_t>(B) * l.Tq * C, n_att = static_cast<size_t>(B) * NH * l.Tq * l.Tk;
    auto q = random_vector(n_q, 71, 2.0f), kv = random_vector(n_kv, 72, 2.0f), dout = random_vector(n_out, 73);
    const auto qt = round_inputs<T>(q), kvt = round_inputs<T>(kv), doutt = round_inputs<T>(dout);
    const float* kvp = l.self ? q.data() : kv.data();
    const T* kvpt = l.self ? qt.data() : kvt.data();

    std::vector<float> out(n_out), att(n_att);
    mha_forward(out.data(), att.data(), q.data(), l.qs, kvp + l.k_off, kvp + l.v_off, l.kvs, lens.data(), B, l.Tq,
                l.Tk, C, NH, false);
    auto outt = nan_filled<T>(n_out);
    auto attt = nan_filled<T>(n_att);
    mha_forward(outt.data(), attt.data(), qt.data(), l.qs, kvpt + l.k_off, kvpt + l.v_off, l.kvs, lens.data(), B,
                l.Tq, l.Tk, C, NH, false);
    std::vector<float> p;
    std::vector<T> p_t;
    for (int b = 0; b < B; ++b)
      for (int r = 0; r < NH * l.Tq; ++r)
        for (int u = 0; u < l.Tk; ++u) {
          const size_t i = (static_cast<size_t>(b) * NH * l.Tq + r) * l.Tk + u;
          if (u >= lens[b]) {
            ASSERT_EQ(attt[i].bits, 0u) << l.what << " padded key " << u;
            continue;
          }
          p.push_back(att[i]);
          p_t.push_back(attt[i]);
        }
    expect_close(name<T>(l.what, "att"), widen(p_t), p, Dtype<T>::kOnce);
    expect_rounded_once(name<T>(l.what, "att"), p_t, p);
    expect_close(name<T>(l.what, "out"), widen(outt), out, Dtype<T>::kFew);

    std::vector<float> dq(n_q, NAN), dkv(n_kv, NAN);
    float* dkvp = l.self ? dq.data() : dkv.data();
    mha_backward(dq.data(), l.qs, dkvp + l.k_off, dkvp + l.v_off, l.kvs, dout.data(), q.data(), l.qs,
                 kvp + l.k_off, kvp + l.v_off, l.kvs, att.data(), lens.data(), B, l.Tq, l.Tk, C, NH, false);
    auto dqt = nan_filled<T>(n_q), dkvt = nan_filled<T>(n_kv);
    T* dkvpt = l.self ? dqt.data() : dkvt.data();
    mha_backward(dqt.data(), l.qs, dkvpt + l.k_off, dkvpt + l.v_off, l.kvs, doutt.data(), qt.data(), l.qs,
                 kvpt + l.k_off, kvpt + l.v_off, l.kvs, attt.data(), lens.data(), B, l.Tq, l.Tk, C, NH, false);
    const auto dqw = widen(dqt), dkvw = widen(dkvt);
    const float* dkvpw = l.self ? dqw.data() : dkvw.data();
    // (name, rows, row stride, offset, fp32 result, T result)
    auto part = [&](const char* what, int rows_per_item, size_t off, const float* ref, const float* got) {
      std::vector<float> g, r;
      for (int b = 0; b < B; ++b)
        for (int t = 0; t < rows_per_item; ++t)
          for (int c = 0; c < C; ++c) {
            const size_t stride = rows_per_item == l.Tq ? l.qs : l.kvs;
            const size_t i = (static_cast<size_t>(b) * rows_per_item + t) * stride + off + c;
            g.push_back(got[i]);
            r.push_back(ref[i]);
          }
      expect_close(name<T>(l.what, what), g, r, Dtype<T>::kFew);
    };
    part("dq", l.Tq, 0, dq.data(), dqw.data());
    part("dk", l.Tk, l.k_off, dkvp, dkvpw);
    part("dv", l.Tk, l.v_off, dkvp, dkvpw);
  }
}

TYPED_TEST(MixedPrecision, Conv1dStride1And2) {
  using T = TypeParam;
  for (int stride : {1, 2}) {
    const int B = 2, Tin = 75, Cin = 40, Cout = 56, K = 3, pad = 1;
    const int Tout = conv1d_out_len(Tin, K, stride, pad);
    const size_t n_in = static_cast<size_t>(B) * Tin * Cin, n_out = static_cast<size_t>(B) * Tout * Cout;
    const size_t n_w = static_cast<size_t>(Cout) * Cin * K;
    auto x = random_vector(n_in, 81), w = random_vector(n_w, 82, 0.3f), b = random_vector(Cout, 83);
    auto dout = random_vector(n_out, 84);
    const auto xt = round_inputs<T>(x), wt = round_inputs<T>(w), bt = round_inputs<T>(b);
    const auto doutt = round_inputs<T>(dout);
    const std::string layer = "conv1d s" + std::to_string(stride);

    std::vector<float> out(n_out);
    conv1d_forward(out.data(), x.data(), w.data(), b.data(), B, Tin, Cin, Cout, K, stride, pad);
    auto outt = nan_filled<T>(n_out);
    conv1d_forward(outt.data(), xt.data(), wt.data(), bt.data(), B, Tin, Cin, Cout, K, stride, pad);
    expect_close(name<T>(layer.c_str(), "out"), widen(outt), out, Dtype<T>::kOnce);
    expect_rounded_once(name<T>(layer.c_str(), "out"), outt, out);

    std::vector<float> dx(n_in, NAN), dw(n_w, 0.0f), db(Cout, 0.0f);
    conv1d_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), B, Tin, Cin, Cout, K, stride,
                    pad);
    auto dxt = nan_filled<T>(n_in);
    std::vector<float> dwt(n_w, 0.0f), dbt(Cout, 0.0f);
    conv1d_backward(dxt.data(), dwt.data(), dbt.data(), doutt.data(), xt.data(), wt.data(), B, Tin, Cin, Cout, K,
                    stride, pad);
    expect_close(name<T>(layer.c_str(), "din"), widen(dxt), dx, Dtype<T>::kOnce);
    expect_rounded_once(name<T>(layer.c_str(), "din"), dxt, dx);
    expect_close(name<T>(layer.c_str(), "dw"), dwt, dw, kParam);
    expect_close(name<T>(layer.c_str(), "db"), dbt, db, kParam);

    const auto dw0 = random_vector(n_w, 85, 10.0f), db0 = random_vector(Cout, 86, 10.0f);
    std::vector<float> dw2 = dw0, db2 = db0;
    for (int k = 0; k < 2; ++k)
      conv1d_backward<T>(nullptr, dw2.data(), db2.data(), doutt.data(), xt.data(), wt.data(), B, Tin, Cin, Cout, K,
                         stride, pad);
    expect_accumulated(layer + " dw", dw2, dw0, dwt);
    expect_accumulated(layer + " db", db2, db0, dbt);
  }
}

TYPED_TEST(MixedPrecision, CtcLoss) {
  using T = TypeParam;
  const int B = 3, Tmax = 40, V = 300, blank = 0;
  const std::vector<int> in_len{40, 31, 12};
  std::vector<int32_t> targets;
  std::vector<int> off, len;
  Rng rng(91, 3);
  for (int b = 0; b < B; ++b) {
    off.push_back(static_cast<int>(targets.size()));
    len.push_back(in_len[b] / 3);
    for (int i = 0; i < len.back(); ++i) targets.push_back(1 + static_cast<int32_t>(rng.below(V - 1)));
  }
  targets[1] = targets[0];  // a repeat
  const std::vector<float> scale{1.0f / 13, 1.0f / 10, 1.0f / 4};
  auto logits = random_vector(static_cast<size_t>(B) * Tmax * V, 92, 4.0f);
  const auto logitst = round_inputs<T>(logits);

  std::vector<float> losses(B), lossest(B), dl(logits.size(), NAN);
  ctc_loss(losses.data(), dl.data(), logits.data(), in_len.data(), targets.data(), off.data(), len.data(),
           scale.data(), B, Tmax, V, blank);
  auto dlt = nan_filled<T>(logits.size());
  EXPECT_EQ(ctc_loss(lossest.data(), dlt.data(), logitst.data(), in_len.data(), targets.data(), off.data(),
                     len.data(), scale.data(), B, Tmax, V, blank),
            0);
  expect_close(name<T>("ctc", "losses"), lossest, losses, kParam);
  std::vector<float> valid_ref;
  std::vector<T> valid_t;
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < Tmax; ++t)
      for (int v = 0; v < V; ++v) {
        const size_t i = (static_cast<size_t>(b) * Tmax + t) * V + v;
        if (t >= in_len[b]) {
          ASSERT_EQ(dlt[i].bits, 0u) << "padded frame " << t;
          continue;
        }
        valid_ref.push_back(dl[i]);
        valid_t.push_back(dlt[i]);
      }
  expect_close(name<T>("ctc", "dlogits"), widen(valid_t), valid_ref, Dtype<T>::kOnce);
  expect_rounded_once(name<T>("ctc", "dlogits"), valid_t, valid_ref);
}

TYPED_TEST(MixedPrecision, AddPositions) {
  using T = TypeParam;
  const int B = 3, Tn = 50, C = 64;
  std::vector<float> pos(static_cast<size_t>(Tn) * C);
  sinusoidal_positions(pos.data(), Tn, C);
  auto x = random_vector(static_cast<size_t>(B) * Tn * C, 95, 2.0f);
  auto xt = round_inputs<T>(x);
  add_positions(x.data(), pos.data(), B, Tn, C);
  add_positions(xt.data(), pos.data(), B, Tn, C);
  expect_close(name<T>("add_positions", "x"), widen(xt), x, Dtype<T>::kOnce);
  expect_rounded_once(name<T>("add_positions", "x"), xt, x);
}

}  // namespace
}  // namespace chorus::nn
