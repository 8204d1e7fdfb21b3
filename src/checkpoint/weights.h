// A single-file HDF5 weights file (<run_dir>/model.h5): one float32 dataset
// per parameter under /params/<GPT-2 dotted name> with its global shape, and
// root attributes format = "chorus-weights", version = 1, the model config
// (n_layer, n_embd, n_head, vocab_size, context) and tokenizer_hash. Each
// dataset carries an attribute sha256: the SHA-256 (hex) of its float32
// little-endian data, checked on every read (a damaged tensor is refused,
// naming the file, the tensor and both digests; a file from before digests
// loads with a warning).
// `generate` and later the speech fine-tune start from it. (Sharded,
// resumable checkpoints with optimizer state are a separate format,
// checkpoint/checkpoint.h; `chorus checkpoint export` turns one into this.)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dist/grid.h"
#include "models/gpt/gpt.h"
#include "nn/tp_shard.h"

namespace chorus::checkpoint {

struct WeightsHeader {
  models::GptConfig config;  // the GPT's, or a speech model's decoder's
  std::string tokenizer_hash;
  // Version 2 (written by `chorus quantize`; version-1 files read as "gpt",
  // unquantised): what the file holds — "gpt", or "speech" with model_extra
  // (the rest of SpeechSeq2SeqConfig, as a checkpoint manifest records it) —,
  // "int8" when some tensors are stored quantised, and the tokenizer's path
  // at the time of writing (informational).
  std::string model_type = "gpt";
  nlohmann::json model_extra;
  std::string quantization;
  std::string tokenizer;
};

// Writes the consolidated (global) tensors atomically (path + ".tmp", fsync,
// rename). Collective over the grid: TP shards are gathered by the ranks of
// DP group 0 and world rank 0 writes the file.
void save_weights(const std::string& path, models::Gpt& model, const std::string& tokenizer_hash,
                  dist::ParallelGrid& grid);
// A global tensor to write: its name under /params, shape and data. With
// codes set the tensor is stored weight-only int8: codes (rows, cols) as an
// int8 dataset under /params and one fp32 scale per row under /scales
// (nn::PackedWeight; rows = shape[0]); data is then unused. Every reader returns
// the dequantised fp32 values, and the digest is theirs.
struct WeightsTensorView {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;
  const int8_t* codes = nullptr;
  const float* scale = nullptr;
};
// Writes a weights file from global tensors, atomically (path + ".tmp",
// fsync, rename, fsync of the directory). save_weights and checkpoint export
// use it.
void write_weights_file(const std::string& path, const models::GptConfig& config, const std::string& tokenizer_hash,
                        const std::vector<WeightsTensorView>& tensors);
// The same with a full header: version 2 when it is not a plain unquantised
// GPT file (older readers then refuse it by version instead of misreading int8
// codes as weights).
void write_weights_file(const std::string& path, const WeightsHeader& header,
                        const std::vector<WeightsTensorView>& tensors);

// A tensor read back from a weights file.
struct WeightsTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
};
// Reads the header and every tensor under /params (in name order).
std::vector<WeightsTensor> read_weights_tensors(const std::string& path, WeightsHeader* header = nullptr);

// Reads only the attributes; throws chorus::Error naming the file and field.
WeightsHeader read_weights_header(const std::string& path);
// Loads every parameter by name into a model built with the same config,
// taking this rank's TP shard (tp_rank of tp) of each global tensor.
// Refuses (naming file and tensor) a missing tensor, a shape mismatch, or a
// tokenizer hash other than expected_hash (pass "" to skip that check).
// allow_new_cross_attention: a GPT file loaded into a speech decoder — its
// cross-attention tensors (ln_x, crossattn.*), absent from the file, keep
// their initial values.
void load_weights(const std::string& path, models::Gpt& model, const std::string& expected_hash, int tp_rank = 0,
                  int tp = 1, bool allow_new_cross_attention = false);

// The TP layout of a parameter as nn/tp_shard.h describes it.
nn::ShardSpec shard_spec(const models::ParamSpec& p);

}  // namespace chorus::checkpoint
