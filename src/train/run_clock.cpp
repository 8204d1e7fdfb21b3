#include "train/run_clock.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/strfmt.h"
#include "dist/communicator.h"

namespace chorus::train {

void RunClock::add_step(double seconds) {
  recent_.push_back(seconds);
  train_total_ += seconds;
  if (static_cast<int>(recent_.size()) > window_) recent_.pop_front();
}

void RunClock::add_eval(double seconds) {
  eval_total_ += seconds;
  ++n_evals_;
}

void RunClock::add_save(double seconds) {
  save_total_ += seconds;
  ++n_saves_;
}

double RunClock::step_seconds() const {
  if (recent_.empty()) return 0.0;
  std::vector<double> v(recent_.begin(), recent_.end());
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

double RunClock::eta(int64_t steps_left, int64_t evals_left, int64_t saves_left) const {
  if (recent_.empty()) return 0.0;
  double s = static_cast<double>(steps_left) * step_seconds();
  if (n_evals_ > 0) s += static_cast<double>(evals_left) * eval_total_ / static_cast<double>(n_evals_);
  if (n_saves_ > 0) s += static_cast<double>(saves_left) * save_total_ / static_cast<double>(n_saves_);
  return s;
}

std::string format_duration(double seconds) {
  const long long s = std::llround(std::max(0.0, seconds));
  if (s < 60) return strfmt("%llds", s);
  if (s < 3600) return strfmt("%lldm%02llds", s / 60, s % 60);
  return strfmt("%lldh%02lldm", s / 3600, s / 60 % 60);
}

int64_t events_left(int64_t every, int64_t done, int64_t end, bool at_end) {
  int64_t n = every > 0 ? (end - 1) / every - (done - 1) / every : 0;  // multiples in [done, end)
  if (at_end || (every > 0 && end % every == 0)) ++n;
  return n;
}

RankTimes gather_rank_times(dist::Communicator& world, double seconds) {
  std::vector<double> all(static_cast<size_t>(world.size()));
  world.all_gather(&seconds, all.data(), all.size(), dist::DType::f64);
  RankTimes t;
  t.slowest = static_cast<int>(std::max_element(all.begin(), all.end()) - all.begin());
  t.max = all[static_cast<size_t>(t.slowest)];
  t.min = *std::min_element(all.begin(), all.end());
  std::nth_element(all.begin(), all.begin() + all.size() / 2, all.end());
  t.median = all[all.size() / 2];
  return t;
}

}  // namespace chorus::train
