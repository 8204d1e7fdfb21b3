// Dynamic loss scaling for fp16 training (Micikevicius et al. 2018, "Mixed
// Precision Training"; the policy of torch.cuda.amp.GradScaler): the loss is
// multiplied by `scale` before backward so that small activation gradients do
// not underflow fp16; the fp32 gradients are divided by it before the
// optimizer. A step whose gradients hold Inf/NaN on any rank is skipped on
// every rank and the scale multiplied by `backoff`; after `growth_interval`
// consecutive good steps it is multiplied by `growth`.
#pragma once

#include <cstdint>

namespace chorus::optim {

struct LossScalerConfig {
  bool enabled = false;
  double init_scale = 65536.0;  // 2^16, as GradScaler
  double growth = 2.0;          // > 1
  int64_t growth_interval = 2000;
  double backoff = 0.5;         // in (0, 1)
  double min_scale = 1.0;       // the scale never goes below this
  double max_scale = 16777216.0;  // 2^24: beyond it fp32 gradients lose their low bits for nothing
  void validate() const;        // throws chorus::Error naming the option
};

// Everything a checkpoint needs to continue exactly.
struct LossScalerSnapshot {
  bool enabled = false;
  double scale = 1.0;
  int64_t good_steps = 0;     // consecutive finite steps since the last change
  int64_t skipped_steps = 0;  // total steps skipped for non-finite gradients
};

class LossScaler {
 public:
  explicit LossScaler(const LossScalerConfig& cfg);
  // The factor backward multiplies the loss by (1 when disabled).
  double scale() const { return enabled_ ? scale_ : 1.0; }
  bool enabled() const { return enabled_; }
  // After each step, with whether any rank found a non-finite gradient (the
  // same value on every rank). Returns true when the step must be skipped.
  bool update(bool found_nonfinite);
  int64_t skipped_steps() const { return skipped_; }
  int64_t consecutive_skips() const { return consecutive_skips_; }
  LossScalerSnapshot snapshot() const;
  void restore(const LossScalerSnapshot& s);

 private:
  LossScalerConfig cfg_;
  bool enabled_;
  double scale_;
  int64_t good_ = 0;
  int64_t skipped_ = 0;
  int64_t consecutive_skips_ = 0;
};

}  // namespace chorus::optim
