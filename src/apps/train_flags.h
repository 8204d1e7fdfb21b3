// The flags every training job shares (`pretrain`, `finetune-speech`): steps,
// schedule, AdamW, precision and loss scaling, parallel layout, checkpoints,
// threads and GEMM path. Each job adds its own model and data flags.
#pragma once

#include <cstdint>
#include <string>

#include "apps/options.h"
#include "models/gpt/gpt.h"
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

// The GPT architecture options of [model] (models::GptConfig, docs/ARCHITECTURE.md):
// --pos, --norm, --qk-norm, --mlp, --untied-head, --logit-softcap, --rope-theta
// (every default is GPT-2's choice), and the attention kernel, --attention.
void add_gpt_arch_flags(OptionSet& o);
void read_gpt_arch_flags(const po::variables_map& vm, models::GptConfig& c);

}  // namespace chorus::apps
