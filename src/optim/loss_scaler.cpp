#include "optim/loss_scaler.h"

#include <algorithm>

#include "core/error.h"

namespace chorus::optim {

void LossScalerConfig::validate() const {
  if (!enabled) return;
  CHORUS_CHECK(init_scale >= 1.0 && init_scale <= max_scale,
               "loss-scale-init: must be in [1, %g], got %g", max_scale, init_scale);
  CHORUS_CHECK(growth > 1.0, "loss-scale-growth: must be > 1, got %g", growth);
  CHORUS_CHECK(growth_interval >= 1, "loss-scale-interval: must be >= 1, got %lld",
               static_cast<long long>(growth_interval));
  CHORUS_CHECK(backoff > 0.0 && backoff < 1.0, "loss-scale-backoff: must be in (0, 1), got %g", backoff);
}

LossScaler::LossScaler(const LossScalerConfig& cfg)
    : cfg_(cfg), enabled_(cfg.enabled), scale_(cfg.enabled ? cfg.init_scale : 1.0) {
  cfg_.validate();
}

bool LossScaler::update(bool found_nonfinite) {
  if (!enabled_) return found_nonfinite;
  if (found_nonfinite) {
    scale_ = std::max(cfg_.min_scale, scale_ * cfg_.backoff);
    good_ = 0;
    ++skipped_;
    ++consecutive_skips_;
    return true;
  }
  consecutive_skips_ = 0;
  if (++good_ >= cfg_.growth_interval) {
    scale_ = std::min(cfg_.max_scale, scale_ * cfg_.growth);
    good_ = 0;
  }
  return false;
}

LossScalerSnapshot LossScaler::snapshot() const { return {enabled_, scale_, good_, skipped_}; }

void LossScaler::restore(const LossScalerSnapshot& s) {
  if (!enabled_ || !s.enabled) return;  // a precision change on resume: keep this run's start
  scale_ = s.scale;
  good_ = s.good_steps;
  skipped_ = s.skipped_steps;
  consecutive_skips_ = 0;
}

}  // namespace chorus::optim
