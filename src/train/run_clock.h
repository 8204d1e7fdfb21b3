// Elapsed time and an ETA for the step line and metrics.jsonl, and the
// spread of step times across ranks (a straggler shows as the slowest rank).
#pragma once

#include <cstdint>
#include <deque>
#include <string>

#include "core/timer.h"

namespace chorus::dist {
class Communicator;
}

namespace chorus::train {

// The remaining time of a run: the steps left at the median of the last
// `window` step times (robust to a slow first step or a hiccup), plus the
// evaluations and checkpoints left at the mean of those measured so far
// (they are timed apart from the steps, so they never inflate the median).
class RunClock {
 public:
  explicit RunClock(int window = 20) : window_(window) {}
  void add_step(double seconds);
  void add_eval(double seconds);
  void add_save(double seconds);
  double elapsed() const { return since_start_.seconds(); }
  // Seconds spent in training steps (no evaluations, no checkpoints).
  double train_seconds() const { return train_total_; }
  // Median of the recent step times (0 before the first step).
  double step_seconds() const;
  // Seconds still to go; 0 before any step was timed.
  double eta(int64_t steps_left, int64_t evals_left, int64_t saves_left) const;

 private:
  int window_;
  Timer since_start_;
  std::deque<double> recent_;
  double eval_total_ = 0.0, save_total_ = 0.0, train_total_ = 0.0;
  int64_t n_evals_ = 0, n_saves_ = 0;
};

// "45s", "12m03s", "3h07m": short enough for the step line.
std::string format_duration(double seconds);

// Events of a cadence still to come after `done` steps of a run that ends at
// step `end` (> done): those at the multiples of `every` (<= 0: none) in
// [done, end), counting the one at step `done` (it runs after the step line),
// plus one at `end` when it is a multiple or at_end says it always happens
// there (the last evaluation of a run, the checkpoint when a run ends).
int64_t events_left(int64_t every, int64_t done, int64_t end, bool at_end);

// Every rank's step time, gathered over `world` (one all_gather of one double
// per rank; collective).
struct RankTimes {
  double min = 0.0, median = 0.0, max = 0.0;
  int slowest = 0;  // world rank with the largest time
};
RankTimes gather_rank_times(dist::Communicator& world, double seconds);

}  // namespace chorus::train
