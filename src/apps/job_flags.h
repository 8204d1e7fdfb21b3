// The model, data and training flags of the two training jobs, shared by the
// job itself and by `chorus plan`, which reads the same flags and config
// files to size a job before it runs.
#pragma once

#include "apps/options.h"
#include "train/finetune_speech.h"
#include "train/pretrain.h"

namespace chorus::apps {

// `pretrain`'s flags (model, data, batch, and the shared training flags).
void add_pretrain_flags(OptionSet& o);
train::PretrainOptions read_pretrain_flags(const po::variables_map& vm);

// `finetune-speech`'s flags.
void add_finetune_speech_flags(OptionSet& o);
train::FinetuneSpeechOptions read_finetune_speech_flags(const po::variables_map& vm);

}  // namespace chorus::apps
