#include "optim/adamw.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "optim/schedule.h"

using namespace chorus::optim;

// Reference AdamW written out per element in double.
static void reference_step(std::vector<double>& p, std::vector<double>& m, std::vector<double>& v,
                           const std::vector<float>& g, double lr, int t, const AdamWConfig& c, bool decay) {
  for (size_t i = 0; i < p.size(); ++i) {
    m[i] = c.beta1 * m[i] + (1 - c.beta1) * g[i];
    v[i] = c.beta2 * v[i] + (1 - c.beta2) * g[i] * g[i];
    double mhat = m[i] / (1 - std::pow(c.beta1, t));
    double vhat = v[i] / (1 - std::pow(c.beta2, t));
    p[i] -= lr * (mhat / (std::sqrt(vhat) + c.eps) + (decay ? c.weight_decay * p[i] : 0.0));
  }
}

TEST(AdamW, MatchesReferenceAndDecaysOnlyMarkedRanges) {
  const size_t n = 1000;
  AdamWConfig cfg;
  cfg.weight_decay = 0.3f;
  AdamW opt(n, {{100, 400}, {700, 800}}, cfg);
  std::vector<float> p(n), g(n);
  std::vector<double> pd(n), m(n, 0), v(n, 0);
  for (size_t i = 0; i < n; ++i) pd[i] = p[i] = std::sin(0.1 * i);
  for (int t = 1; t <= 5; ++t) {
    for (size_t i = 0; i < n; ++i) g[i] = static_cast<float>(std::cos(0.37 * i * t));
    opt.step(p, g, 1e-2f, t);
    std::vector<double> pdec(pd), mdec(m), vdec(v);
    reference_step(pd, m, v, g, 1e-2, t, cfg, false);
    reference_step(pdec, mdec, vdec, g, 1e-2, t, cfg, true);
    for (size_t i = 0; i < n; ++i) {
      bool decayed = (i >= 100 && i < 400) || (i >= 700 && i < 800);
      if (decayed) pd[i] = pdec[i];
    }
  }
  for (size_t i = 0; i < n; ++i) EXPECT_NEAR(p[i], pd[i], 2e-5) << "element " << i;
}

TEST(AdamW, RefusesBadRangesAndSizes) {
  EXPECT_THROW(AdamW(10, {{5, 20}}, AdamWConfig{}), chorus::Error);
  EXPECT_THROW(AdamW(10, {{0, 5}, {3, 8}}, AdamWConfig{}), chorus::Error);
  AdamW opt(10, {}, AdamWConfig{});
  std::vector<float> p(10), g(9);
  EXPECT_THROW(opt.step(p, g, 1e-3f, 1), chorus::Error);
}

TEST(Clip, GlobalNormAndScaling) {
  std::vector<float> g = {3.0f, 4.0f};
  double norm = global_norm(g);
  EXPECT_NEAR(norm, 5.0, 1e-12);
  EXPECT_FLOAT_EQ(clip_by_global_norm(g, norm, 10.0f), 1.0f);  // below the limit: unchanged
  EXPECT_FLOAT_EQ(g[0], 3.0f);
  clip_by_global_norm(g, norm, 1.0f);
  EXPECT_NEAR(global_norm(g), 1.0, 1e-5);
  EXPECT_NEAR(g[0] / g[1], 0.75, 1e-6);  // direction kept
}

TEST(LrSchedule, CosineWarmupPeakAndFloor) {
  LrSchedule s{1.0f, 0.1f, 10, 110};
  EXPECT_FLOAT_EQ(s.lr_at(0), 0.1f);
  EXPECT_FLOAT_EQ(s.lr_at(9), 1.0f);
  EXPECT_FLOAT_EQ(s.lr_at(10), 1.0f);
  EXPECT_NEAR(s.lr_at(60), 0.55f, 1e-6);  // half way down the cosine
  EXPECT_NEAR(s.lr_at(110), 0.1f, 1e-7);
  EXPECT_NEAR(s.lr_at(500), 0.1f, 1e-7);
  for (int64_t i = 10; i < 110; ++i) EXPECT_LE(s.lr_at(i + 1), s.lr_at(i) + 1e-7f);
  EXPECT_THROW((LrSchedule{1.0f, 2.0f, 0, 10}.validate()), chorus::Error);
  EXPECT_THROW((LrSchedule{1.0f, 0.0f, -1, 10}.validate()), chorus::Error);
}

// Warmup-stable-decay: the peak from the end of the warmup until the last
// decay_frac x steps, then a straight line that reaches min_lr at the last step.
TEST(LrSchedule, WsdHoldsThePeakThenDecaysLinearly) {
  const LrSchedule s{1.0f, 0.1f, 10, 110, ScheduleKind::wsd, 0.2};  // decay over steps 88..109
  EXPECT_FLOAT_EQ(s.lr_at(0), 0.1f);
  EXPECT_FLOAT_EQ(s.lr_at(9), 1.0f);
  for (int64_t i = 10; i < 88; ++i) ASSERT_FLOAT_EQ(s.lr_at(i), 1.0f) << "step " << i;
  EXPECT_LT(s.lr_at(88), 1.0f);
  EXPECT_NEAR(s.lr_at(88) - s.lr_at(89), s.lr_at(100) - s.lr_at(101), 1e-6);  // linear
  EXPECT_NEAR(s.lr_at(109), 0.1f, 1e-6);
  EXPECT_NEAR(s.lr_at(98), 1.0f - 0.9f * 11.0f / 22.0f, 1e-6);  // half way down
  EXPECT_FLOAT_EQ(s.lr_at(200), 0.1f);
  // The decay never reaches into the warmup; decay_frac 0 stays at the peak.
  const LrSchedule all{1.0f, 0.0f, 10, 20, ScheduleKind::wsd, 1.0};
  EXPECT_FLOAT_EQ(all.lr_at(9), 1.0f);
  EXPECT_LT(all.lr_at(10), 1.0f);
  EXPECT_FLOAT_EQ((LrSchedule{1.0f, 0.0f, 0, 20, ScheduleKind::wsd, 0.0}.lr_at(19)), 1.0f);
  EXPECT_THROW((LrSchedule{1.0f, 0.0f, 0, 20, ScheduleKind::wsd, 1.5}.validate()), chorus::Error);
  EXPECT_EQ(parse_schedule("wsd"), ScheduleKind::wsd);
  EXPECT_THROW(parse_schedule("linear"), chorus::Error);
}
