// GPT pretraining: a TrainTask (train/loop.h) of a Gpt on HDF5 text shards
// with next-token cross-entropy, validated in loss and bits per byte; the
// final weights go to <run_dir>/model.h5 and, on request, a sample is
// generated. Everything else (accumulation, optimizer, schedule, logging,
// checkpoints, resume, signals) is the shared loop's.
#pragma once

#include <cstdint>
#include <string>

#include "models/gpt/gpt.h"
#include "train/loop.h"

namespace chorus::train {

struct PretrainOptions {
  models::GptConfig model;        // model.vocab_size 0 = take the tokenizer's
  std::string tokenizer_path;     // tokenizer JSON (its hash must match the shards')
  std::string data_dir;           // directory with train_*.h5 and val_*.h5 shards
  int batch = 8;                  // sequences per micro-batch (per DP rank: the global batch is batch x grad_accum x dp)
  int seq_len = 256;              // T (<= model.context)
  int eval_batches = 8;           // validation micro-batches each time
  int sample_tokens = 0;          // > 0: generate a sample of this many tokens at the end
  float sample_temperature = 0.8f;
  int sample_top_k = 40;
  TrainOptions train;             // the loop's options (train/loop.h)
};

struct PretrainResult : TrainResult {
  float val_loss = 0.0f;          // final validation loss (nats/token)
  float val_bpb = 0.0f;           // final validation bits per byte
  std::string weights_path;       // <run_dir>/model.h5
  std::string sample;             // generated text when sample_tokens > 0
};

PretrainResult pretrain(const PretrainOptions& opt);

}  // namespace chorus::train
