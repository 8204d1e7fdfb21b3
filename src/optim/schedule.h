// Learning-rate schedule: linear warmup from 0 to max_lr over warmup_steps,
// then cosine decay to min_lr at total_steps (GPT-3 / nanoGPT convention).
// total_steps is the length the run is planned for, not the steps of one
// invocation, so a resumed run follows the same curve.
#pragma once

#include <cstdint>

namespace chorus::optim {

struct CosineSchedule {
  float max_lr = 6e-4f;
  float min_lr = 6e-5f;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;

  // Learning rate for optimizer step `step` (0-based).
  float lr_at(int64_t step) const;
  void validate() const;  // throws chorus::Error naming the bad field
};

}  // namespace chorus::optim
