#include "nn/ctc.h"

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

// Row-wise log-softmax in double.
std::vector<double> log_softmax(const std::vector<float>& logits, int Tn, int V) {
  std::vector<double> out(static_cast<size_t>(Tn) * V);
  for (int t = 0; t < Tn; ++t) {
    double mx = -1e300, z = 0.0;
    for (int v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(logits[t * V + v]));
    for (int v = 0; v < V; ++v) z += std::exp(logits[t * V + v] - mx);
    for (int v = 0; v < V; ++v) out[t * V + v] = logits[t * V + v] - mx - std::log(z);
  }
  return out;
}

// -log p(target | x) by enumerating all V^T frame labellings (the definition,
// eq. 2-3 of Graves et al. 2006): collapse repeats, drop blanks, compare.
double brute_force_loss(const std::vector<float>& logits, int Tn, int V, const std::vector<int32_t>& target,
                        int blank) {
  const auto lp = log_softmax(logits, Tn, V);
  size_t n_paths = 1;
  for (int t = 0; t < Tn; ++t) n_paths *= V;
  double p = 0.0;
  std::vector<int> path(Tn);
  for (size_t code = 0; code < n_paths; ++code) {
    size_t c = code;
    for (int t = 0; t < Tn; ++t, c /= V) path[t] = static_cast<int>(c % V);
    std::vector<int32_t> labels;
    for (int t = 0; t < Tn; ++t)
      if (path[t] != blank && (t == 0 || path[t] != path[t - 1])) labels.push_back(path[t]);
    if (labels != target) continue;
    double lpath = 0.0;
    for (int t = 0; t < Tn; ++t) lpath += lp[t * V + path[t]];
    p += std::exp(lpath);
  }
  return -std::log(p);
}

struct Batch {
  int B, Tmax, V, blank;
  std::vector<int> in_len, tgt_off, tgt_len;
  std::vector<int32_t> targets;
  static Batch of(int Tmax, int V, int blank, const std::vector<std::vector<int32_t>>& tg,
                  const std::vector<int>& lens) {
    Batch b{static_cast<int>(tg.size()), Tmax, V, blank, lens, {}, {}, {}};
    for (const auto& t : tg) {
      b.tgt_off.push_back(static_cast<int>(b.targets.size()));
      b.tgt_len.push_back(static_cast<int>(t.size()));
      b.targets.insert(b.targets.end(), t.begin(), t.end());
    }
    return b;
  }
  size_t n_logits() const { return static_cast<size_t>(B) * Tmax * V; }
  template <typename T>
  int run(float* losses, T* dlogits, const T* logits, const float* scale = nullptr) const {
    return ctc_loss(losses, dlogits, logits, in_len.data(), targets.data(), tgt_off.data(), tgt_len.data(),
                    scale, B, Tmax, V, blank);
  }
};

TEST(Ctc, LossMatchesBruteForceEnumeration) {
  const int Tn = 4, V = 3;
  for (const std::vector<int32_t>& target :
       {std::vector<int32_t>{1, 2}, {2, 1}, {1, 1}, {2, 2}, {1}, {}, {1, 2, 1}, {1, 1, 2}}) {
    for (int blank : {0, 2}) {
      bool uses_blank = false;
      for (int32_t l : target) uses_blank |= l == blank;
      if (uses_blank) continue;
      for (uint64_t seed = 1; seed <= 3; ++seed) {
        const auto logits = random_vector(Tn * V, seed, 3.0f);
        const Batch b = Batch::of(Tn, V, blank, {target}, {Tn});
        float loss = NAN;
        std::vector<float> dl(Tn * V);
        EXPECT_EQ(b.run(&loss, dl.data(), logits.data()), 0);
        const double ref = brute_force_loss(logits, Tn, V, target, blank);
        EXPECT_NEAR(loss, ref, 1e-5 * (1.0 + ref)) << "target size " << target.size() << " blank " << blank;
        // The likelihood helper on log-probabilities agrees.
        const auto lp = log_softmax(logits, Tn, V);
        std::vector<float> lpf(lp.begin(), lp.end());
        EXPECT_NEAR(
            -ctc_log_likelihood(lpf.data(), Tn, V, target.data(), static_cast<int>(target.size()), blank),
            ref, 1e-5 * (1.0 + ref));
      }
    }
  }
}

// A repeated label needs a blank in between: with exactly L + repeats frames
// there is one alignment.
// Prefix scoring (joint decoding): extending label by label and closing gives
// the full likelihood; a prefix's score is the sum over its continuations
// (brute force: every labelling of at most Tn labels that starts with it).
TEST(Ctc, PrefixScoresMatchTheLikelihoodAndSumOverContinuations) {
  const int Tn = 4, V = 3, blank = 0;
  const auto logits = random_vector(Tn * V, 21, 2.0f);
  const auto lpd = log_softmax(logits, Tn, V);
  const std::vector<float> lp(lpd.begin(), lpd.end());
  for (const std::vector<int32_t>& lab : {std::vector<int32_t>{1}, {1, 2}, {2, 2}, {1, 2, 1}}) {
    CtcPrefix h = ctc_prefix_root(lp.data(), Tn, V, blank);
    for (int32_t c : lab) h = ctc_prefix_extend(h, c, lp.data(), Tn, V, blank);
    const double want = ctc_log_likelihood(lp.data(), Tn, V, lab.data(), static_cast<int>(lab.size()), blank);
    EXPECT_NEAR(ctc_prefix_final(h), want, 1e-9) << lab.size() << " labels";
  }
  // P(prefix [1]) = sum of P(y) over labellings y starting with 1.
  double sum = 0.0;
  std::vector<std::vector<int32_t>> all = {{1}};
  for (size_t k = 0; k < all.size(); ++k) {
    const auto y = all[k];
    sum += std::exp(ctc_log_likelihood(lp.data(), Tn, V, y.data(), static_cast<int>(y.size()), blank));
    if (static_cast<int>(y.size()) < Tn)
      for (int32_t c : {1, 2}) {
        auto z = y;
        z.push_back(c);
        all.push_back(z);
      }
  }
  CtcPrefix h = ctc_prefix_extend(ctc_prefix_root(lp.data(), Tn, V, blank), 1, lp.data(), Tn, V, blank);
  EXPECT_NEAR(std::exp(h.score), sum, 1e-6);
}

TEST(Ctc, RepeatedLabelsAtMinimumLengthHaveOneAlignment) {
  const int Tn = 3, V = 4;
  const auto logits = random_vector(Tn * V, 5, 2.0f);
  const Batch b = Batch::of(Tn, V, 0, {{3, 3}}, {Tn});
  float loss = NAN;
  EXPECT_EQ(b.run<float>(&loss, nullptr, logits.data()), 0);
  const auto lp = log_softmax(logits, Tn, V);
  EXPECT_NEAR(loss, -(lp[0 * V + 3] + lp[1 * V + 0] + lp[2 * V + 3]), 1e-5);
}

TEST(Ctc, GradientMatchesFiniteDifferences) {
  // Padded items of several lengths, repeats, an empty target, per-item scales.
  Batch b = Batch::of(7, 5, 0, {{1, 2, 2}, {3, 3, 3}, {4}, {}, {1, 2, 3, 4}}, {7, 6, 3, 2, 5});
  auto logits = random_vector(b.n_logits(), 21, 2.0f);
  const std::vector<float> scale{1.0f, 0.5f, 2.0f, -1.0f, 0.25f};
  std::vector<float> losses(b.B);
  std::vector<float> dl(b.n_logits(), NAN);
  EXPECT_EQ(b.run(losses.data(), dl.data(), logits.data(), scale.data()), 0);
  for (int i = 0; i < b.B; ++i)
    for (int t = b.in_len[i]; t < b.Tmax; ++t)
      for (int v = 0; v < b.V; ++v) ASSERT_EQ(dl[(static_cast<size_t>(i) * b.Tmax + t) * b.V + v], 0.0f);
  auto loss = [&] {
    std::vector<float> l(b.B);
    b.run<float>(l.data(), nullptr, logits.data());
    double s = 0.0;
    for (int i = 0; i < b.B; ++i) s += static_cast<double>(scale[i]) * l[i];
    return s;
  };
  chorus::testing::GradCheckOptions opt;
  opt.eps = 1e-2;
  opt.atol = 2e-3;
  expect_grad_close("dlogits", logits.data(), dl.data(), dl.size(), loss, opt);
  // Each frame's gradient (scale 1) sums to 0 over V: softmax minus a posterior.
  for (int t = 0; t < b.in_len[0]; ++t) {
    double s = 0.0;
    for (int v = 0; v < b.V; ++v) s += dl[t * b.V + v];
    EXPECT_NEAR(s, 0.0, 1e-6);
  }
}

TEST(Ctc, InfeasibleItemsGiveInfiniteLossAndZeroGradient) {
  // {1, 1} needs 3 frames, {1, 2, 3} needs 3: both get 2; the last item is fine.
  const Batch b = Batch::of(4, 4, 0, {{1, 1}, {1, 2, 3}, {2, 1}}, {2, 2, 4});
  const auto logits = random_vector(b.n_logits(), 31, 2.0f);
  std::vector<float> losses(b.B), dl(b.n_logits(), NAN);
  EXPECT_EQ(b.run(losses.data(), dl.data(), logits.data()), 2);
  EXPECT_EQ(losses[0], std::numeric_limits<float>::infinity());
  EXPECT_EQ(losses[1], std::numeric_limits<float>::infinity());
  for (size_t i = 0; i < 2 * static_cast<size_t>(b.Tmax) * b.V; ++i) ASSERT_EQ(dl[i], 0.0f) << i;
  // The feasible item is unaffected.
  std::vector<float> one(logits.end() - b.Tmax * b.V, logits.end());
  const double ref = brute_force_loss(one, 4, 4, {2, 1}, 0);
  EXPECT_NEAR(losses[2], ref, 1e-5 * (1.0 + ref));
  const int32_t rep[] = {1, 1};
  std::vector<float> lp(2 * 4, -1.0f);
  EXPECT_EQ(ctc_log_likelihood(lp.data(), 2, 4, rep, 2, 0), -std::numeric_limits<double>::infinity());
}

// dlogits may alias logits.
TEST(Ctc, GradientInPlace) {
  const Batch b = Batch::of(6, 7, 3, {{1, 2, 1}, {5, 5}}, {6, 4});
  const auto logits = random_vector(b.n_logits(), 41, 2.0f);
  std::vector<float> losses(b.B), dl(b.n_logits());
  b.run(losses.data(), dl.data(), logits.data());
  std::vector<float> inplace = logits, losses2(b.B);
  b.run(losses2.data(), inplace.data(), inplace.data());
  for (size_t i = 0; i < dl.size(); ++i) ASSERT_EQ(inplace[i], dl[i]) << i;
  for (int i = 0; i < b.B; ++i) ASSERT_EQ(losses2[i], losses[i]);
}

// A speech-sized vocabulary: the loss is the likelihood helper's on the
// log-softmax, and each frame's gradient sums to zero.
TEST(Ctc, LargeVocabularyConsistent) {
  const int Tn = 60, V = 8192, blank = 0;
  std::vector<int32_t> tg;
  for (int i = 0; i < 25; ++i) tg.push_back(1 + (i * 977) % (V - 1));
  tg[5] = tg[4];
  const Batch b = Batch::of(Tn, V, blank, {tg}, {Tn});
  const auto logits = random_vector(b.n_logits(), 51, 4.0f);
  float loss = NAN;
  std::vector<float> dl(b.n_logits());
  b.run(&loss, dl.data(), logits.data());
  const auto lp = log_softmax(logits, Tn, V);
  std::vector<float> lpf(lp.begin(), lp.end());
  const double ll = ctc_log_likelihood(lpf.data(), Tn, V, tg.data(), static_cast<int>(tg.size()), blank);
  EXPECT_NEAR(loss, -ll, 1e-5 * std::abs(ll));
  for (int t = 0; t < Tn; ++t) {
    double s = 0.0;
    for (int v = 0; v < V; ++v) s += dl[static_cast<size_t>(t) * V + v];
    EXPECT_NEAR(s, 0.0, 1e-5) << "frame " << t;
  }
}

// The alignment prior of the speech decoder's cross-attention: a peaky CTC
// emitting label 1 at frame 3 and label 2 at frame 8 (blank elsewhere) puts
// the prior after prefix [1] on the gap [3, 8) and the window after it, the
// frames before label 1 at the floor; pooled by 2 it is the mean per pair.
TEST(Ctc, AlignmentPriorFollowsThePrefix) {
  const int Tn = 14, V = 3, blank = 0;
  std::vector<float> lp(Tn * V);
  for (int t = 0; t < Tn; ++t) {
    const int hot = t == 3 ? 1 : t == 8 ? 2 : blank;
    for (int v = 0; v < V; ++v) lp[t * V + v] = std::log(v == hot ? 0.98f : 0.01f);
  }
  const CtcPrefix root = ctc_prefix_root(lp.data(), Tn, V, blank);
  const CtcPrefix h1 = ctc_prefix_extend(root, 1, lp.data(), Tn, V, blank);
  const float floor = 1e-3f;
  const int window = 2;
  std::vector<float> out(Tn);
  ctc_alignment_prior(h1, window, floor, 1, out.data());
  // pi is ~uniform over the gap [3, 8) (0.2 a frame); the prior sums it over [t - 2, t]
  for (int t = 5; t <= 7; ++t) EXPECT_NEAR(out[t], std::log(0.6f + floor), 0.05f) << "frame " << t;
  EXPECT_NEAR(out[3], std::log(0.2f + floor), 0.1f);  // + what pi holds before frame 3
  EXPECT_NEAR(out[8], std::log(0.4f + floor), 0.05f) << "frame 8: two gap frames in its window";
  EXPECT_NEAR(out[9], std::log(0.2f + floor), 0.05f) << "frame 9: one";
  for (int t : {0, 1, 2, 11, 12}) EXPECT_LT(out[t], -4.0f) << "frame " << t << " is outside the prefix's window";
  // The empty prefix: its prior covers the frames before label 1 (+ the window).
  ctc_alignment_prior(root, window, floor, 1, out.data());
  EXPECT_GT(out[1], -1.0f);
  EXPECT_GT(out[2], -0.1f);
  for (int t : {6, 8, 12}) EXPECT_LT(out[t], -4.0f) << "frame " << t;
  // Pooled by 2: the log of each pair's mean prior, 7 rows.
  std::vector<float> one(Tn), two(Tn / 2);
  ctc_alignment_prior(h1, window, floor, 1, one.data());
  ctc_alignment_prior(h1, window, floor, 2, two.data());
  for (int r = 0; r < Tn / 2; ++r) {
    const double mean = 0.5 * ((std::exp(one[2 * r]) - floor) + (std::exp(one[2 * r + 1]) - floor));
    EXPECT_NEAR(two[r], std::log(mean + floor), 1e-4) << "row " << r;
  }
  // A prefix the frames cannot hold: no prior at all.
  CtcPrefix impossible = h1;
  for (int k = 0; k < 10; ++k) impossible = ctc_prefix_extend(impossible, 1 + k % 2, lp.data(), 3, V, blank);
  std::vector<float> none(3, 7.0f);
  ctc_alignment_prior(impossible, window, floor, 1, none.data());
  for (float x : none) EXPECT_EQ(x, 0.0f);
}

TEST(Ctc, GreedyCollapsesRepeatsAndDropsBlanks) {
  const int V = 4, blank = 0;
  const int best[] = {1, 1, 0, 1, 2, 2, 0, 0, 3, 3, 0};
  const int Tn = sizeof(best) / sizeof(best[0]);
  std::vector<float> logits(Tn * V, -1.0f);
  for (int t = 0; t < Tn; ++t) logits[t * V + best[t]] = 2.0f;
  EXPECT_EQ(ctc_greedy(logits.data(), Tn, V, blank), (std::vector<int32_t>{1, 1, 2, 3}));
  EXPECT_TRUE(ctc_greedy(logits.data(), 0, V, blank).empty());
}

TEST(Ctc, RejectsBadLabels) {
  const auto logits = random_vector(4 * 3, 61);
  float loss;
  for (const std::vector<int32_t>& bad : {std::vector<int32_t>{0}, {3}, {-1}}) {
    const Batch b = Batch::of(4, 3, 0, {bad}, {4});
    EXPECT_THROW(b.run<float>(&loss, nullptr, logits.data()), Error);
  }
  const Batch too_long = Batch::of(4, 3, 0, {{1}}, {5});
  EXPECT_THROW(too_long.run<float>(&loss, nullptr, logits.data()), Error);
}

}  // namespace
}  // namespace chorus::nn
