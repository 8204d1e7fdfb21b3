// A single-file HDF5 weights file (<run_dir>/model.h5): one float32 dataset
// per parameter under /params/<GPT-2 dotted name> with its global shape, and
// root attributes format = "chorus-weights", version = 1, the model config
// (n_layer, n_embd, n_head, vocab_size, context) and tokenizer_hash.
// `generate` and later the speech fine-tune start from it. (Sharded,
// resumable checkpoints with optimizer state are a separate format.)
#pragma once

#include <string>

#include "dist/grid.h"
#include "models/gpt/gpt.h"
#include "nn/tp_shard.h"

namespace chorus::checkpoint {

struct WeightsHeader {
  models::GptConfig config;
  std::string tokenizer_hash;
};

// Writes the consolidated (global) tensors atomically (path + ".tmp", fsync,
// rename). Collective over the grid: TP shards are gathered by the ranks of
// DP group 0 and world rank 0 writes the file.
void save_weights(const std::string& path, models::Gpt& model, const std::string& tokenizer_hash,
                  dist::ParallelGrid& grid);
// Reads only the attributes; throws chorus::Error naming the file and field.
WeightsHeader read_weights_header(const std::string& path);
// Loads every parameter by name into a model built with the same config,
// taking this rank's TP shard (tp_rank of tp) of each global tensor.
// Refuses (naming file and tensor) a missing tensor, a shape mismatch, or a
// tokenizer hash other than expected_hash (pass "" to skip that check).
void load_weights(const std::string& path, models::Gpt& model, const std::string& expected_hash, int tp_rank = 0,
                  int tp = 1);

// The TP layout of a parameter as nn/tp_shard.h describes it.
nn::ShardSpec shard_spec(const models::ParamSpec& p);

}  // namespace chorus::checkpoint
