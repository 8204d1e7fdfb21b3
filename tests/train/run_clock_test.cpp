// The step line's elapsed time / ETA arithmetic and the rank-spread gather.
#include <gtest/gtest.h>

#include "dist/communicator.h"
#include "train/run_clock.h"

using namespace chorus::train;

TEST(RunClock, FormatsShortDurations) {
  EXPECT_EQ(format_duration(0), "0s");
  EXPECT_EQ(format_duration(44.6), "45s");
  EXPECT_EQ(format_duration(723), "12m03s");
  EXPECT_EQ(format_duration(3 * 3600 + 7 * 60 + 20), "3h07m");
  EXPECT_EQ(format_duration(-5), "0s");
}

TEST(RunClock, EtaUsesTheMedianOfRecentStepsNotAnOutlier) {
  RunClock c(5);
  EXPECT_EQ(c.eta(10, 0, 0), 0.0);  // nothing timed yet
  c.add_step(30.0);                 // a slow first step (warm-up) ...
  for (int i = 0; i < 4; ++i) c.add_step(1.0);
  EXPECT_DOUBLE_EQ(c.step_seconds(), 1.0);  // ... does not move the median
  EXPECT_DOUBLE_EQ(c.eta(10, 0, 0), 10.0);
  for (int i = 0; i < 5; ++i) c.add_step(2.0);  // the window forgets old steps
  EXPECT_DOUBLE_EQ(c.step_seconds(), 2.0);
}

TEST(RunClock, EtaAddsTheEvaluationsAndCheckpointsStillToCome) {
  RunClock c;
  c.add_step(1.0);
  EXPECT_DOUBLE_EQ(c.eta(4, 2, 1), 4.0);  // none measured yet: they count 0
  c.add_eval(3.0);
  c.add_eval(5.0);
  c.add_save(10.0);
  EXPECT_DOUBLE_EQ(c.eta(4, 2, 1), 4.0 + 2 * 4.0 + 10.0);
}

TEST(RunClock, CountsTheEventsLeft) {
  // Evaluations every 10 steps of a 100-step run, after step 10: 10, 20, ..., 100.
  EXPECT_EQ(events_left(10, 10, 100, true), 10);
  EXPECT_EQ(events_left(10, 11, 100, true), 9);
  // The last step: only its own event (always at the end, or as a multiple).
  EXPECT_EQ(events_left(10, 100, 100, true), 1);
  EXPECT_EQ(events_left(10, 100, 100, false), 1);
  EXPECT_EQ(events_left(7, 100, 100, false), 0);
  // --stop-at 35 of 100 with evaluations every 10: 30 only (no final evaluation at 35).
  EXPECT_EQ(events_left(10, 21, 35, false), 1);
  // Off (0): only the one at the end when it always happens (the final checkpoint).
  EXPECT_EQ(events_left(0, 5, 50, true), 1);
  EXPECT_EQ(events_left(0, 5, 50, false), 0);
}

TEST(RunClock, RankTimesOfOneRank) {
  chorus::dist::LocalCommunicator world;
  const RankTimes t = gather_rank_times(world, 0.25);
  EXPECT_EQ(t.slowest, 0);
  EXPECT_DOUBLE_EQ(t.min, 0.25);
  EXPECT_DOUBLE_EQ(t.median, 0.25);
  EXPECT_DOUBLE_EQ(t.max, 0.25);
}
