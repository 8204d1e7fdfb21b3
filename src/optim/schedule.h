// Learning-rate schedules, both with a linear warmup from 0 to max_lr over
// warmup_steps:
//   cosine: then cosine decay to min_lr at total_steps (GPT-3 / nanoGPT);
//   wsd (warmup-stable-decay, "trapezoidal"): then max_lr until the last
//     decay_frac x total_steps steps, which decay linearly to min_lr. Short runs
//     and runs that may be extended train longer at the peak rate.
// total_steps is the length the run is planned for, not the steps of one
// invocation, so a resumed run follows the same curve.
#pragma once

#include <cstdint>
#include <string>

namespace chorus::optim {

enum class ScheduleKind { cosine, wsd };
ScheduleKind parse_schedule(const std::string& name);  // "cosine" | "wsd", else an Error naming the flag
const char* schedule_name(ScheduleKind k);

struct LrSchedule {
  float max_lr = 6e-4f;
  float min_lr = 6e-5f;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  ScheduleKind kind = ScheduleKind::cosine;
  double decay_frac = 0.2;  // wsd: the share of total_steps spent decaying

  // Learning rate for optimizer step `step` (0-based).
  float lr_at(int64_t step) const;
  void validate() const;  // throws chorus::Error naming the bad field
};

}  // namespace chorus::optim
