#include "nn/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "grad_check.h"

namespace chorus::nn {
namespace {

using chorus::testing::expect_grad_close;
using chorus::testing::random_vector;
using chorus::testing::weighted_sum;

// Straightforward causal attention in double: out (B, T, C).
std::vector<double> naive_attention(const std::vector<float>& qkv, int B, int T, int C, int NH) {
  const int hs = C / NH;
  std::vector<double> out(static_cast<size_t>(B) * T * C, 0.0);
  std::vector<double> p(T);
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      for (int t = 0; t < T; ++t) {
        const float* q = &qkv[(static_cast<size_t>(b) * T + t) * 3 * C + h * hs];
        double mx = -1e300;
        for (int u = 0; u <= t; ++u) {
          const float* k = &qkv[(static_cast<size_t>(b) * T + u) * 3 * C + C + h * hs];
          double s = 0.0;
          for (int i = 0; i < hs; ++i) s += static_cast<double>(q[i]) * k[i];
          p[u] = s / std::sqrt(static_cast<double>(hs));
          mx = std::max(mx, p[u]);
        }
        double z = 0.0;
        for (int u = 0; u <= t; ++u) z += (p[u] = std::exp(p[u] - mx));
        for (int u = 0; u <= t; ++u) {
          const float* v = &qkv[(static_cast<size_t>(b) * T + u) * 3 * C + 2 * C + h * hs];
          for (int i = 0; i < hs; ++i)
            out[(static_cast<size_t>(b) * T + t) * C + h * hs + i] += p[u] / z * v[i];
        }
      }
    }
  }
  return out;
}

void check_forward(int B, int T, int C, int NH) {
  auto qkv = random_vector(static_cast<size_t>(B) * T * 3 * C, 1, 2.0f);
  std::vector<float> out(static_cast<size_t>(B) * T * C), att(static_cast<size_t>(B) * NH * T * T);
  attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
  auto ref = naive_attention(qkv, B, T, C, NH);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 2e-5) << "element " << i;
  // Saved probabilities: rows sum to 1 over t' <= t.
  for (int bh = 0; bh < B * NH; ++bh) {
    for (int t = 0; t < T; ++t) {
      double s = 0.0;
      for (int u = 0; u <= t; ++u) s += att[(static_cast<size_t>(bh) * T + t) * T + u];
      ASSERT_NEAR(s, 1.0, 1e-5);
    }
  }
}

TEST(Attention, ForwardMatchesNaiveOneBlock) { check_forward(2, 7, 12, 3); }
// T spans several causal row blocks, the last one partial.
TEST(Attention, ForwardMatchesNaiveManyBlocks) { check_forward(2, 2 * kAttnBlock + 5, 16, 2); }

void check_backward(int B, int T, int C, int NH, size_t max_checks) {
  auto qkv = random_vector(static_cast<size_t>(B) * T * 3 * C, 2, 1.5f);
  auto wout = random_vector(static_cast<size_t>(B) * T * C, 3);
  std::vector<float> out(static_cast<size_t>(B) * T * C), att(static_cast<size_t>(B) * NH * T * T);
  auto loss = [&] {
    attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
    return weighted_sum(out.data(), wout.data(), out.size());
  };
  loss();
  std::vector<float> dqkv(qkv.size(), std::numeric_limits<float>::quiet_NaN());
  attention_backward(dqkv.data(), wout.data(), qkv.data(), att.data(), B, T, C, NH);
  chorus::testing::GradCheckOptions opt;
  opt.eps = 3e-3;
  opt.atol = 2e-3;
  opt.max_checks = max_checks;
  expect_grad_close("dqkv", qkv.data(), dqkv.data(), qkv.size(), loss, opt);
}

TEST(Attention, BackwardMatchesFiniteDifferences) { check_backward(2, 6, 8, 2, SIZE_MAX); }
TEST(Attention, BackwardManyBlocksMatchesFiniteDifferences) {
  check_backward(1, 2 * kAttnBlock + 3, 8, 2, 1500);
}

TEST(Attention, DecodeMatchesFullForwardAtEachPosition) {
  const int B = 2, T = 9, C = 12, NH = 3;
  auto qkv = random_vector(static_cast<size_t>(B) * T * 3 * C, 4, 2.0f);
  std::vector<float> out(static_cast<size_t>(B) * T * C), att(static_cast<size_t>(B) * NH * T * T);
  attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
  // Cache laid out (B, T, C) for k and v.
  std::vector<float> kc(static_cast<size_t>(B) * T * C), vc(kc.size());
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < C; ++c) {
        kc[(b * T + t) * C + c] = qkv[(b * T + t) * 3 * C + C + c];
        vc[(b * T + t) * C + c] = qkv[(b * T + t) * 3 * C + 2 * C + c];
      }
  std::vector<float> q(static_cast<size_t>(B) * 3 * C), y(static_cast<size_t>(B) * C), scores(B * NH * T);
  for (int t = 0; t < T; ++t) {
    for (int b = 0; b < B; ++b)
      for (int c = 0; c < 3 * C; ++c) q[b * 3 * C + c] = qkv[(b * T + t) * 3 * C + c];
    attention_decode(y.data(), scores.data(), q.data(), 3 * C, kc.data(), vc.data(),
                     static_cast<size_t>(T) * C, B, t + 1, C, NH);
    for (int b = 0; b < B; ++b)
      for (int c = 0; c < C; ++c) EXPECT_NEAR(y[b * C + c], out[(b * T + t) * C + c], 1e-5) << "t " << t;
  }
}


// ---- general multi-head attention (mha_forward / mha_backward / mha_decode) ----

// One attention problem: q rows (b, t) at q + (b*Tq + t) * qs inside buffer
// qbuf, k / v rows at kvbuf + k_off / v_off + (b*Tk + s) * kvs.
struct MhaCase {
  int B, Tq, Tk, C, NH;
  bool causal;
  std::vector<int> kv_len;  // empty: all keys valid
  size_t qs, kvs;           // row strides
  size_t k_off, v_off;      // offsets of k and v inside kvbuf
  bool self;                // q, k, v in one fused buffer (qbuf), else q in qbuf, k|v in kvbuf
  const int* lens() const { return kv_len.empty() ? nullptr : kv_len.data(); }
  int n_valid(int b) const { return kv_len.empty() ? Tk : kv_len[b]; }
  // An additive score bias (nn::AttentionBias): (B, Tq, Tk) values, one weight per head; empty = none.
  std::vector<float> bias, bias_w;
  AttentionBias attention_bias() const { return {bias.data(), bias_w.data()}; }
};

// Straightforward attention in double: out (B, Tq, C).
std::vector<double> naive_mha(const MhaCase& m, const float* q, const float* k, const float* v) {
  const int hs = m.C / m.NH;
  std::vector<double> out(static_cast<size_t>(m.B) * m.Tq * m.C, 0.0);
  std::vector<double> p(m.Tk);
  for (int b = 0; b < m.B; ++b)
    for (int h = 0; h < m.NH; ++h)
      for (int t = 0; t < m.Tq; ++t) {
        const float* qr = q + (static_cast<size_t>(b) * m.Tq + t) * m.qs + h * hs;
        const int n = m.causal ? std::min(t + 1, m.n_valid(b)) : m.n_valid(b);
        double mx = -1e300;
        for (int u = 0; u < n; ++u) {
          const float* kr = k + (static_cast<size_t>(b) * m.Tk + u) * m.kvs + h * hs;
          double s = 0.0;
          for (int i = 0; i < hs; ++i) s += static_cast<double>(qr[i]) * kr[i];
          p[u] = s / std::sqrt(static_cast<double>(hs));
          if (!m.bias.empty())
            p[u] += static_cast<double>(m.bias_w[h]) * m.bias[(static_cast<size_t>(b) * m.Tq + t) * m.Tk + u];
          mx = std::max(mx, p[u]);
        }
        double z = 0.0;
        for (int u = 0; u < n; ++u) z += (p[u] = std::exp(p[u] - mx));
        for (int u = 0; u < n; ++u) {
          const float* vr = v + (static_cast<size_t>(b) * m.Tk + u) * m.kvs + h * hs;
          for (int i = 0; i < hs; ++i)
            out[(static_cast<size_t>(b) * m.Tq + t) * m.C + h * hs + i] += p[u] / z * vr[i];
        }
      }
  return out;
}

// Buffers of one case: qbuf holds q (and k, v when self), kvbuf k | v otherwise.
struct MhaData {
  std::vector<float> qbuf, kvbuf;
  float* kvb() { return kvbuf.empty() ? qbuf.data() : kvbuf.data(); }
  const float* q() const { return qbuf.data(); }
};

MhaData make_data(const MhaCase& m, uint64_t seed) {
  MhaData d;
  d.qbuf = random_vector(static_cast<size_t>(m.B) * m.Tq * m.qs, seed, 1.5f);
  if (!m.self) d.kvbuf = random_vector(static_cast<size_t>(m.B) * m.Tk * m.kvs, seed + 100, 1.5f);
  return d;
}

void run_forward(const MhaCase& m, MhaData& d, std::vector<float>& out, std::vector<float>& att) {
  out.assign(static_cast<size_t>(m.B) * m.Tq * m.C, NAN);
  att.assign(static_cast<size_t>(m.B) * m.NH * m.Tq * m.Tk, NAN);
  float* kv = d.kvb();
  const AttentionBias bias = m.attention_bias();
  mha_forward(out.data(), att.data(), d.q(), m.qs, kv + m.k_off, kv + m.v_off, m.kvs, m.lens(), m.B, m.Tq,
              m.Tk, m.C, m.NH, m.causal, m.bias.empty() ? nullptr : &bias);
}

// A cross-attention case with a random bias on heads 0 and 2 (weights 1.5, 0.5) and none on the others.
MhaCase with_bias(MhaCase m) {
  m.bias = random_vector(static_cast<size_t>(m.B) * m.Tq * m.Tk, 90, 3.0f);
  m.bias_w.assign(m.NH, 0.0f);
  m.bias_w[0] = 1.5f;
  if (m.NH > 2) m.bias_w[2] = 0.5f;
  return m;
}

MhaCase causal_fused(int B, int T, int C, int NH) {
  return {B, T, T, C, NH, true, {}, 3 * static_cast<size_t>(C), 3 * static_cast<size_t>(C),
          static_cast<size_t>(C), 2 * static_cast<size_t>(C), true};
}
MhaCase encoder_padded(int T, int C, int NH, std::vector<int> lens) {
  MhaCase m = causal_fused(static_cast<int>(lens.size()), T, C, NH);
  m.causal = false;
  m.kv_len = std::move(lens);
  return m;
}
// q (B, Tq, C) with 3 spare columns per row (stride C + 3), k | v fused (B, Tk, 2C).
MhaCase cross(int Tq, int Tk, int C, int NH, std::vector<int> lens) {
  return {static_cast<int>(lens.size()), Tq, Tk, C, NH, false, std::move(lens), static_cast<size_t>(C) + 3,
          2 * static_cast<size_t>(C), 0, static_cast<size_t>(C), false};
}

void check_mha_forward(const MhaCase& m) {
  MhaData d = make_data(m, 61);
  std::vector<float> out, att;
  run_forward(m, d, out, att);
  const float* kv = d.kvb();
  const auto ref = naive_mha(m, d.q(), kv + m.k_off, kv + m.v_off);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 2e-5) << "element " << i;
  // Probabilities: allowed keys sum to 1, masked keys are 0 up to the row's end.
  for (int b = 0; b < m.B; ++b)
    for (int h = 0; h < m.NH; ++h)
      for (int t = 0; t < m.Tq; ++t) {
        const float* row = &att[((static_cast<size_t>(b) * m.NH + h) * m.Tq + t) * m.Tk];
        const int n = m.causal ? std::min(t + 1, m.n_valid(b)) : m.n_valid(b);
        const int end = m.causal ? std::min(m.Tq, (t / kAttnBlock + 1) * kAttnBlock) : m.Tk;
        double s = 0.0;
        for (int u = 0; u < n; ++u) s += row[u];
        ASSERT_NEAR(s, 1.0, 1e-5) << "b " << b << " h " << h << " t " << t;
        for (int u = n; u < end; ++u) ASSERT_EQ(row[u], 0.0f) << "masked key " << u << " of row " << t;
      }
}

TEST(Mha, CausalFusedMatchesNaive) { check_mha_forward(causal_fused(2, kAttnBlock + 9, 12, 3)); }
TEST(Mha, CausalWithKeyLengthsMatchesNaive) {
  MhaCase m = causal_fused(2, kAttnBlock + 9, 12, 3);
  m.kv_len = {kAttnBlock + 2, 5};  // the second ends inside the first row block
  check_mha_forward(m);
}
TEST(Mha, BidirectionalPaddedMatchesNaive) { check_mha_forward(encoder_padded(11, 12, 3, {11, 6, 1})); }
TEST(Mha, CrossAttentionMatchesNaive) { check_mha_forward(cross(7, 13, 8, 2, {13, 9})); }
// An additive bias (the speech decoder's CTC alignment prior) on some heads.
TEST(Mha, CrossAttentionWithBiasMatchesNaive) { check_mha_forward(with_bias(cross(7, 13, 12, 3, {13, 9}))); }
TEST(Mha, CrossAttentionManyQueriesMatchesNaive) {
  check_mha_forward(cross(2 * kAttnBlock + 3, 5, 8, 2, {4, 5}));
}

// The wrapper is the general code on the fused layout: same bits.
TEST(Mha, AttentionForwardIsMhaOnFusedQkv) {
  const MhaCase m = causal_fused(2, 2 * kAttnBlock + 5, 16, 2);
  MhaData d = make_data(m, 62);
  std::vector<float> out, att;
  run_forward(m, d, out, att);
  std::vector<float> out2(out.size()), att2(att.size(), NAN);
  attention_forward(out2.data(), att2.data(), d.q(), m.B, m.Tq, m.C, m.NH);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], out2[i]) << i;
}

void check_mha_backward(const MhaCase& m, size_t max_checks) {
  MhaData d = make_data(m, 63);
  const auto wout = random_vector(static_cast<size_t>(m.B) * m.Tq * m.C, 64);
  std::vector<float> out, att;
  auto loss = [&] {
    run_forward(m, d, out, att);
    return weighted_sum(out.data(), wout.data(), out.size());
  };
  loss();
  // Gradient buffers shaped like the inputs, pre-filled with a sentinel: every
  // C-wide row part must be overwritten, the spare columns left alone.
  const float kSentinel = 12345.0f;
  std::vector<float> dq(d.qbuf.size(), kSentinel), dkv(d.kvbuf.size(), kSentinel);
  float* dkvb = m.self ? dq.data() : dkv.data();
  float* kv = d.kvb();
  mha_backward(dq.data(), m.qs, dkvb + m.k_off, dkvb + m.v_off, m.kvs, wout.data(), d.q(), m.qs, kv + m.k_off,
               kv + m.v_off, m.kvs, att.data(), m.lens(), m.B, m.Tq, m.Tk, m.C, m.NH, m.causal);
  if (!m.self) {
    for (size_t r = 0; r < static_cast<size_t>(m.B) * m.Tq; ++r)
      for (size_t c = m.C; c < m.qs; ++c) ASSERT_EQ(dq[r * m.qs + c], kSentinel) << "dq wrote a spare column";
  }
  // Padded keys get exactly zero gradient.
  for (int b = 0; b < m.B; ++b)
    for (int s = m.n_valid(b); s < m.Tk; ++s)
      for (int c = 0; c < m.C; ++c) {
        const size_t r = (static_cast<size_t>(b) * m.Tk + s) * m.kvs;
        ASSERT_EQ(dkvb[r + m.k_off + c], 0.0f) << "dk of padded key " << s;
        ASSERT_EQ(dkvb[r + m.v_off + c], 0.0f) << "dv of padded key " << s;
      }
  chorus::testing::GradCheckOptions opt;
  opt.eps = 3e-3;
  opt.atol = 2e-3;
  opt.max_checks = max_checks;
  if (m.self) {
    expect_grad_close("dqkv", d.qbuf.data(), dq.data(), d.qbuf.size(), loss, opt);
  } else {
    // spare q columns: the sentinel is not a gradient; check the C-wide part only
    std::vector<size_t> idx;
    for (size_t r = 0; r < static_cast<size_t>(m.B) * m.Tq; ++r)
      for (int c = 0; c < m.C; ++c) idx.push_back(r * m.qs + c);
    opt.indices = idx;
    expect_grad_close("dq", d.qbuf.data(), dq.data(), d.qbuf.size(), loss, opt);
    opt.indices.clear();
    expect_grad_close("dkv", d.kvbuf.data(), dkv.data(), d.kvbuf.size(), loss, opt);
  }
}

TEST(Mha, CausalBackwardMatchesFiniteDifferences) { check_mha_backward(causal_fused(2, 6, 8, 2), SIZE_MAX); }
TEST(Mha, CausalWithKeyLengthsBackwardMatchesFiniteDifferences) {
  MhaCase m = causal_fused(2, kAttnBlock + 4, 8, 2);
  m.kv_len = {kAttnBlock + 1, 3};
  check_mha_backward(m, 600);
}
TEST(Mha, BidirectionalPaddedBackwardMatchesFiniteDifferences) {
  check_mha_backward(encoder_padded(19, 8, 2, {19, 4, 1}), 800);  // rows longer than a vector of floats
}
TEST(Mha, CrossAttentionBackwardMatchesFiniteDifferences) {
  check_mha_backward(cross(5, 20, 8, 2, {20, 6}), SIZE_MAX);
}
// The bias is a constant: backward differentiates the biased softmax from the saved probabilities alone.
TEST(Mha, CrossAttentionWithBiasBackwardMatchesFiniteDifferences) {
  check_mha_backward(with_bias(cross(5, 20, 12, 3, {20, 6})), SIZE_MAX);
}
// Keys past kv_len take no part: changing their k and v changes no output bit.
TEST(Mha, PaddedKeysDoNotChangeOutputs) {
  for (const MhaCase& m : {encoder_padded(13, 12, 3, {13, 7, 2}), cross(6, 10, 8, 2, {10, 3})}) {
    MhaData d = make_data(m, 65);
    std::vector<float> out, att, out2, att2;
    run_forward(m, d, out, att);
    float* kv = d.kvb();
    for (int b = 0; b < m.B; ++b)
      for (int s = m.n_valid(b); s < m.Tk; ++s)
        for (int c = 0; c < m.C; ++c) {
          const size_t r = (static_cast<size_t>(b) * m.Tk + s) * m.kvs;
          kv[r + m.k_off + c] = 50.0f * (c % 3 - 1.0f);  // huge scores if they were used
          kv[r + m.v_off + c] = -1e4f;
        }
    run_forward(m, d, out2, att2);
    for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], out2[i]) << "output " << i;
    for (size_t i = 0; i < att.size(); ++i) ASSERT_EQ(att[i], att2[i]) << "probability " << i;
  }
}

void check_decode(const MhaCase& m) {
  MhaData d = make_data(m, 66);
  std::vector<float> out, att;
  run_forward(m, d, out, att);
  const float* kv = d.kvb();
  std::vector<float> y(static_cast<size_t>(m.B) * m.C), scores(static_cast<size_t>(m.B) * m.NH * m.Tk, NAN);
  std::vector<float> row_bias(static_cast<size_t>(m.B) * m.Tk);
  for (int t = 0; t < m.Tq; ++t) {
    // query t of every sequence: rows t of q, i.e. stride Tq * qs between sequences
    for (int b = 0; b < m.B && !m.bias.empty(); ++b)
      std::copy_n(m.bias.begin() + (static_cast<size_t>(b) * m.Tq + t) * m.Tk, m.Tk, row_bias.begin() + b * m.Tk);
    const AttentionBias bias{row_bias.data(), m.bias_w.data()};
    mha_decode(y.data(), scores.data(), d.q() + t * m.qs, m.Tq * m.qs, kv + m.k_off, kv + m.v_off, m.kvs,
               static_cast<size_t>(m.Tk) * m.kvs, m.lens(), m.B, m.Tk, m.C, m.NH, m.bias.empty() ? nullptr : &bias);
    for (int b = 0; b < m.B; ++b) {
      for (int c = 0; c < m.C; ++c)
        EXPECT_NEAR(y[b * m.C + c], out[(static_cast<size_t>(b) * m.Tq + t) * m.C + c], 1e-5) << "t " << t;
      for (int h = 0; h < m.NH; ++h)
        for (int s = 0; s < m.Tk; ++s)
          EXPECT_NEAR(scores[(static_cast<size_t>(b) * m.NH + h) * m.Tk + s],
                      att[((static_cast<size_t>(b) * m.NH + h) * m.Tq + t) * m.Tk + s], 1e-6);
    }
  }
}

TEST(Mha, DecodeMatchesFullForward) { check_decode(cross(5, 11, 12, 3, {11, 4})); }
TEST(Mha, DecodeWithBiasMatchesFullForward) { check_decode(with_bias(cross(5, 11, 12, 3, {11, 4}))); }

TEST(Mha, RejectsBadShapes) {
  std::vector<float> buf(1024), att(1024);
  const float* p = buf.data();
  EXPECT_THROW(mha_forward(buf.data(), att.data(), p, 8, p, p, 8, nullptr, 1, 3, 4, 8, 2, true), Error);
  const int zero = 0, too_long = 5;
  EXPECT_THROW(mha_forward(buf.data(), att.data(), p, 8, p, p, 8, &zero, 1, 3, 4, 8, 2, false), Error);
  EXPECT_THROW(mha_forward(buf.data(), att.data(), p, 8, p, p, 8, &too_long, 1, 3, 4, 8, 2, false), Error);
  EXPECT_THROW(mha_forward(buf.data(), att.data(), p, 8, p, p, 8, nullptr, 1, 3, 4, 9, 2, false), Error);
}

}  // namespace
}  // namespace chorus::nn
