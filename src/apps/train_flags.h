// The flags every training job shares (`pretrain`, `finetune-speech`): steps,
// schedule, AdamW, precision and loss scaling, parallel layout, checkpoints,
// threads and GEMM path. Each job adds its own model and data flags.
#pragma once

#include <cstdint>
#include <string>

#include "apps/options.h"
#include "train/loop.h"

namespace chorus::apps {

// Defaults that differ between jobs.
struct TrainFlagDefaults {
  int64_t steps = 1000;
  std::string run_dir = "checkpoints/run";
  int64_t eval_every = 100;
  float lr = 6e-4f;
  float min_lr = 6e-5f;
  int64_t warmup = 100;
};

void add_train_flags(OptionSet& o, const TrainFlagDefaults& d);
// Reads them back (and applies --threads and --gemm to the process). The
// caller sets the grid (the --tp flag: vm["tp"]).
train::TrainOptions read_train_flags(const po::variables_map& vm);

}  // namespace chorus::apps
