// The fp16 overflow path of the distributed optimizer step under mpirun:
// an Inf/NaN in the gradients of any single rank (any DP or TP position)
// makes every rank skip the update together — parameters and Adam moments
// untouched everywhere — and the loss scaler reduces the scale identically on
// every rank; the next finite step updates again. Also the scaler's policy.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "dist/grid.h"
#include "dist_test_env.h"
#include "optim/distributed.h"
#include "optim/loss_scaler.h"

using chorus::dist::ParallelGrid;
using chorus::dist::testing::g_runtime;
using chorus::optim::DistributedOptimizer;
using chorus::optim::DistributedOptimizerConfig;
using chorus::optim::LossScaler;
using chorus::optim::LossScalerConfig;
using chorus::optim::Range;

namespace {

void check_skip(int tp, int zero, int bad_rank, float bad_value) {
  const int world = g_runtime->world().size();
  if (world % tp != 0) GTEST_SKIP() << "tp " << tp << " needs a world divisible by it";
  ParallelGrid grid(*g_runtime, tp);
  const size_t n = 1001;
  DistributedOptimizerConfig cfg;
  cfg.zero_stage = zero;
  DistributedOptimizer opt(n, {{0, n}}, {{0, 10}}, cfg, grid.dp(), grid.tp());
  LossScalerConfig lcfg;
  lcfg.enabled = true;
  lcfg.init_scale = 1024;
  LossScaler scaler(lcfg);
  std::vector<float> params(n, 1.0f), grads(n);
  // A finite step first, so the moments are non-zero.
  for (size_t i = 0; i < n; ++i) grads[i] = static_cast<float>(scaler.scale() * 1e-3 * (i % 7));
  auto st = opt.step(params, grads, 1e-2f, 1, {scaler.scale(), true, {}});
  EXPECT_FALSE(st.skipped);
  EXPECT_FALSE(scaler.update(st.skipped));
  const std::vector<float> p_before = params;
  const std::vector<float> m_before(opt.adamw().m().begin(), opt.adamw().m().end());
  // Now one rank's gradients hold a non-finite value.
  for (size_t i = 0; i < n; ++i) grads[i] = static_cast<float>(scaler.scale() * 1e-3);
  if (grid.world_rank() == bad_rank) grads[n / 2] = bad_value;
  st = opt.step(params, grads, 1e-2f, 2, {scaler.scale(), true, {}});
  EXPECT_TRUE(st.skipped) << "rank " << grid.world_rank() << " did not skip (bad rank " << bad_rank << ")";
  EXPECT_TRUE(std::isinf(st.grad_norm));
  EXPECT_TRUE(scaler.update(st.skipped));
  EXPECT_EQ(scaler.scale(), 512.0);
  EXPECT_EQ(scaler.skipped_steps(), 1);
  EXPECT_EQ(params, p_before) << "a skipped step changed parameters on rank " << grid.world_rank();
  const std::vector<float> m_after(opt.adamw().m().begin(), opt.adamw().m().end());
  EXPECT_EQ(m_after, m_before);
  // Every rank holds the same scale.
  EXPECT_EQ(g_runtime->world().all_reduce_scalar(scaler.scale(), chorus::dist::ReduceOp::max), 512.0);
  EXPECT_EQ(g_runtime->world().all_reduce_scalar(scaler.scale(), chorus::dist::ReduceOp::min), 512.0);
  // A finite step afterwards updates again, unscaled by the new scale.
  for (size_t i = 0; i < n; ++i) grads[i] = static_cast<float>(scaler.scale() * 1e-3);
  st = opt.step(params, grads, 1e-2f, 3, {scaler.scale(), true, {}});
  EXPECT_FALSE(st.skipped);
  EXPECT_NE(params, p_before);
}

}  // namespace

TEST(LossScaleSkip, InfOnTheLastRankSkipsEveryDpRank) { check_skip(1, 0, g_runtime->world().size() - 1, INFINITY); }
TEST(LossScaleSkip, NanOnRankZeroSkipsEveryRankWithZero1) { check_skip(1, 1, 0, std::nanf("")); }
TEST(LossScaleSkip, InfOnOneTpRankSkipsTheWholeGrid) { check_skip(2, 0, 1, -INFINITY); }
TEST(LossScaleSkip, InfOnOneRankOfDp2xTp2WithZero1) { check_skip(2, 1, g_runtime->world().size() - 1, INFINITY); }

TEST(LossScaler, GrowsAfterTheIntervalAndBacksOff) {
  LossScalerConfig c;
  c.enabled = true;
  c.init_scale = 8;
  c.growth_interval = 3;
  LossScaler s(c);
  EXPECT_EQ(s.scale(), 8);
  s.update(false), s.update(false);
  EXPECT_EQ(s.scale(), 8);
  s.update(false);
  EXPECT_EQ(s.scale(), 16);  // 3 good steps
  s.update(false);
  EXPECT_TRUE(s.update(true));
  EXPECT_EQ(s.scale(), 8);  // backoff 0.5, and the good-step count restarts
  s.update(false), s.update(false);
  EXPECT_EQ(s.scale(), 8);
  s.update(false);
  EXPECT_EQ(s.scale(), 16);
  for (int i = 0; i < 40; ++i) s.update(true);
  EXPECT_EQ(s.scale(), 1.0) << "never below min_scale";
  EXPECT_EQ(s.skipped_steps(), 41);
  LossScalerConfig off;
  EXPECT_EQ(LossScaler(off).scale(), 1.0);
  c.backoff = 1.5;
  EXPECT_THROW(LossScaler{c}, chorus::Error);
}
