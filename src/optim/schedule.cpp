#include "optim/schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace chorus::optim {

ScheduleKind parse_schedule(const std::string& name) {
  if (name == "cosine") return ScheduleKind::cosine;
  if (name == "wsd") return ScheduleKind::wsd;
  CHORUS_FAIL("schedule: expected cosine or wsd, got '%s'", name.c_str());
}

const char* schedule_name(ScheduleKind k) { return k == ScheduleKind::wsd ? "wsd" : "cosine"; }

float LrSchedule::lr_at(int64_t step) const {
  if (warmup_steps > 0 && step < warmup_steps)
    return max_lr * static_cast<float>(step + 1) / static_cast<float>(warmup_steps);
  if (step >= total_steps) return min_lr;
  if (kind == ScheduleKind::wsd) {
    // The decay starts decay_frac x total_steps before the end (never inside the warmup).
    const int64_t decay_steps = static_cast<int64_t>(std::llround(decay_frac * static_cast<double>(total_steps)));
    const int64_t decay_start = std::max(warmup_steps, total_steps - decay_steps);
    if (step < decay_start) return max_lr;
    const double progress =
        static_cast<double>(step - decay_start + 1) / static_cast<double>(total_steps - decay_start);
    return static_cast<float>(max_lr + progress * (min_lr - max_lr));
  }
  const double span = static_cast<double>(total_steps - warmup_steps);
  const double progress = span > 0 ? static_cast<double>(step - warmup_steps) / span : 1.0;
  const double coeff = 0.5 * (1.0 + std::cos(M_PI * progress));
  return static_cast<float>(min_lr + coeff * (max_lr - min_lr));
}

void LrSchedule::validate() const {
  CHORUS_CHECK(max_lr > 0, "lr: must be > 0, got %g", max_lr);
  CHORUS_CHECK(min_lr >= 0 && min_lr <= max_lr, "min-lr: must be in [0, lr=%g], got %g", max_lr, min_lr);
  CHORUS_CHECK(warmup_steps >= 0, "warmup: must be >= 0, got %lld", static_cast<long long>(warmup_steps));
  CHORUS_CHECK(total_steps >= 1, "steps: must be >= 1, got %lld", static_cast<long long>(total_steps));
  CHORUS_CHECK(decay_frac >= 0 && decay_frac <= 1, "decay-frac: must be in [0, 1], got %g", decay_frac);
}

}  // namespace chorus::optim
