#include "optim/schedule.h"

#include <cmath>

#include "core/error.h"

namespace chorus::optim {

float CosineSchedule::lr_at(int64_t step) const {
  if (warmup_steps > 0 && step < warmup_steps)
    return max_lr * static_cast<float>(step + 1) / static_cast<float>(warmup_steps);
  if (step >= total_steps) return min_lr;
  const double span = static_cast<double>(total_steps - warmup_steps);
  const double progress = span > 0 ? static_cast<double>(step - warmup_steps) / span : 1.0;
  const double coeff = 0.5 * (1.0 + std::cos(M_PI * progress));
  return static_cast<float>(min_lr + coeff * (max_lr - min_lr));
}

void CosineSchedule::validate() const {
  CHORUS_CHECK(max_lr > 0, "lr: must be > 0, got %g", max_lr);
  CHORUS_CHECK(min_lr >= 0 && min_lr <= max_lr, "min-lr: must be in [0, lr=%g], got %g", max_lr, min_lr);
  CHORUS_CHECK(warmup_steps >= 0, "warmup: must be >= 0, got %lld", static_cast<long long>(warmup_steps));
  CHORUS_CHECK(total_steps >= 1, "steps: must be >= 1, got %lld", static_cast<long long>(total_steps));
}

}  // namespace chorus::optim
