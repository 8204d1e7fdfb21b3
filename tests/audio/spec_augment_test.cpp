// SpecAugment: the expected number of masks within their width bounds, found
// both in the reported masks and in the features themselves; masked cells hold
// the clip's mean, all others are untouched; the same seed gives the same masks.
#include "audio/spec_augment.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "core/error.h"
#include "core/rng.h"

using namespace chorus::audio;
using chorus::Rng;

namespace {

std::vector<float> random_feats(int n_frames, int n_mels, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-1.5f, 1.5f);
  std::vector<float> f(static_cast<size_t>(n_frames) * n_mels);
  for (float& v : f) v = u(gen);
  return f;
}

}  // namespace

TEST(SpecAugment, MasksCountWidthsAndFill) {
  const int T = 300, M = 80;
  const SpecAugmentConfig cfg;  // 2 x F = 15, 2 x min(40, 0.05 * 300 = 15)
  int max_f = 0, max_t = 0, min_f = 1 << 30, min_t = 1 << 30;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    SCOPED_TRACE(seed);
    const std::vector<float> orig = random_feats(T, M, static_cast<unsigned>(seed));
    std::vector<float> f = orig;
    Rng rng(seed, 3);
    const SpecAugmentMasks masks = spec_augment(f.data(), T, M, cfg, rng);
    double mean = 0;
    for (float v : orig) mean += v;
    mean /= orig.size();
    EXPECT_NEAR(masks.fill, mean, 1e-6);
    ASSERT_EQ(masks.freq.size(), 2u);
    ASSERT_EQ(masks.time.size(), 2u);
    std::vector<bool> band_masked(M, false), frame_masked(T, false);
    for (const SpecMask& m : masks.freq) {
      ASSERT_GE(m.width, 0);
      ASSERT_LE(m.width, 15);
      ASSERT_GE(m.start, 0);
      ASSERT_LE(m.start + m.width, M);
      for (int b = m.start; b < m.start + m.width; ++b) band_masked[b] = true;
      max_f = std::max(max_f, m.width);
      min_f = std::min(min_f, m.width);
    }
    for (const SpecMask& m : masks.time) {
      ASSERT_GE(m.width, 0);
      ASSERT_LE(m.width, 15);
      ASSERT_GE(m.start, 0);
      ASSERT_LE(m.start + m.width, T);
      for (int t = m.start; t < m.start + m.width; ++t) frame_masked[t] = true;
      max_t = std::max(max_t, m.width);
      min_t = std::min(min_t, m.width);
    }
    // Every cell: masked (= fill) exactly where a mask covers it, else untouched.
    for (int t = 0; t < T; ++t)
      for (int b = 0; b < M; ++b) {
        const size_t i = static_cast<size_t>(t) * M + b;
        if (band_masked[b] || frame_masked[t])
          ASSERT_EQ(f[i], masks.fill) << t << "," << b;
        else
          ASSERT_EQ(f[i], orig[i]) << t << "," << b;
      }
    // Independently of the reported masks: the bands equal to the fill in every
    // frame are exactly the masked bands: at most 2 runs, 30 bands in all.
    std::vector<bool> col(M);
    for (int b = 0; b < M; ++b) {
      bool all = true;
      for (int t = 0; t < T && all; ++t) all = f[static_cast<size_t>(t) * M + b] == masks.fill;
      col[b] = all;
    }
    ASSERT_EQ(col, band_masked);
    int n_runs = 0, covered = 0, run = 0;
    for (int b = 0; b < M; ++b) {
      if (col[b] && (b == 0 || !col[b - 1])) ++n_runs;
      run = col[b] ? run + 1 : 0;
      covered += col[b];
      ASSERT_LE(run, 30);  // two overlapping masks make one run of up to 2F
    }
    ASSERT_LE(n_runs, 2);
    ASSERT_LE(covered, 30);
  }
  // Over 200 clips the widths reach both ends of their ranges.
  EXPECT_EQ(min_f, 0);
  EXPECT_EQ(max_f, 15);
  EXPECT_EQ(min_t, 0);
  EXPECT_EQ(max_t, 15);
}

TEST(SpecAugment, TimeWidthBoundIsTheSmallerOfFractionAndCap) {
  SpecAugmentConfig cfg;
  cfg.n_freq_masks = 0;
  cfg.n_time_masks = 3;
  cfg.time_width_fraction = 0.2;
  cfg.max_time_width = 40;
  int widest = 0;
  for (uint64_t seed = 0; seed < 300; ++seed) {
    std::vector<float> f = random_feats(1000, 8, 1);
    Rng rng(seed);
    const auto masks = spec_augment(f.data(), 1000, 8, cfg, rng);
    EXPECT_TRUE(masks.freq.empty());
    ASSERT_EQ(masks.time.size(), 3u);
    for (const auto& m : masks.time) widest = std::max(widest, m.width);
  }
  EXPECT_EQ(widest, 40);  // the cap, not 0.2 * 1000
  // Short clip: 0.2 * 30 = 6 frames.
  widest = 0;
  for (uint64_t seed = 0; seed < 300; ++seed) {
    std::vector<float> f = random_feats(30, 8, 1);
    Rng rng(seed);
    for (const auto& m : spec_augment(f.data(), 30, 8, cfg, rng).time) widest = std::max(widest, m.width);
  }
  EXPECT_EQ(widest, 6);
}

TEST(SpecAugment, DeterministicForASeed) {
  const std::vector<float> orig = random_feats(200, 80, 9);
  std::vector<float> a = orig, b = orig, c = orig;
  Rng ra(42, 1), rb(42, 1), rc(43, 1);
  spec_augment(a.data(), 200, 80, SpecAugmentConfig(), ra);
  spec_augment(b.data(), 200, 80, SpecAugmentConfig(), rb);
  spec_augment(c.data(), 200, 80, SpecAugmentConfig(), rc);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(ra.state(), rb.state());  // the same number of draws
}

TEST(SpecAugment, EmptyInputAndBadConfigs) {
  Rng rng(1);
  const Rng::State before = rng.state();
  EXPECT_TRUE(spec_augment(nullptr, 0, 80, SpecAugmentConfig(), rng).freq.empty());
  EXPECT_EQ(rng.state(), before);
  // Bands wider than the spectrogram: clamped to n_mels.
  SpecAugmentConfig wide;
  wide.freq_width = 100;
  std::vector<float> f = random_feats(10, 4, 2);
  for (const auto& m : spec_augment(f.data(), 10, 4, wide, rng).freq) EXPECT_LE(m.start + m.width, 4);
  SpecAugmentConfig bad;
  bad.freq_width = -1;
  EXPECT_THROW(spec_augment(f.data(), 10, 4, bad, rng), chorus::Error);
  bad = SpecAugmentConfig();
  bad.time_width_fraction = 1.5;
  EXPECT_THROW(spec_augment(f.data(), 10, 4, bad, rng), chorus::Error);
}
