// How a sharded checkpoint maps the model onto files (docs/CHECKPOINTS.md).
//
// The model is a table of tensors, each with a global shape and a
// tensor-parallel split (nn/tp_shard.h). A TP rank holds every tensor's local
// shard, contiguous in table order, in one flat buffer of n_local floats; its
// optimizer state (Adam moments) covers either that whole buffer (ZeRO 0:
// identical on every DP rank, stored once by DP rank 0) or DP rank d's chunk
// [chunk_begin(n_local, dp, d), chunk_begin(n_local, dp, d + 1)) (ZeRO 1).
// Files: one model file per TP rank, one optimizer file per stored
// (TP, DP) slice.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "models/gpt/gpt.h"
#include "nn/tp_shard.h"

namespace chorus::checkpoint {

// One tensor as the checkpoint stores it: the global (unsharded) view.
struct TensorInfo {
  std::string name;                   // GPT-2 dotted name, e.g. "h.0.attn.c_attn.weight"
  std::vector<int64_t> global_shape;  // row-major; Linear weights (out, in)
  int tp_axis = -1;                   // sharded axis, -1 = replicated on every TP rank
  int tp_parts = 1;                   // blocks sharded separately (3 for the fused QKV)

  nn::ShardSpec spec() const { return {global_shape, tp_axis, tp_parts}; }
  size_t global_numel() const;
  size_t local_numel(int tp) const { return nn::local_numel(spec(), tp); }
};

// The model's tensor table (global shapes and splits) in buffer order.
std::vector<TensorInfo> tensor_table(const models::Gpt& model);

// A half-open range [begin, end) of a flat buffer.
struct FlatRange {
  size_t begin = 0;
  size_t end = 0;
  size_t size() const { return end - begin; }
};

// A parallel layout: TP degree, DP degree, ZeRO stage.
struct Layout {
  int tp = 1;
  int dp = 1;
  int zero = 0;
  int world() const { return tp * dp; }
  bool operator==(const Layout&) const = default;
  std::string describe() const;  // "tp 2 x dp 2, zero 1"
  // Throws naming the field when a degree is < 1 or the stage is not 0 / 1.
  void validate(const std::string& where) const;
};

// Offsets of each tensor's local shard in a TP rank's flat buffer (tensors
// contiguous in table order, as models::Gpt lays them out); *n_local gets the
// buffer length.
std::vector<size_t> local_offsets(const std::vector<TensorInfo>& tensors, int tp, size_t* n_local);
// Offsets of each tensor in the global flat buffer (tp = 1).
inline std::vector<size_t> global_offsets(const std::vector<TensorInfo>& tensors, size_t* n_global) {
  return local_offsets(tensors, 1, n_global);
}

// The part of a TP rank's flat buffer whose optimizer state DP rank dp_rank
// holds (the DistributedOptimizer's owned() range).
FlatRange optimizer_range(size_t n_local, const Layout& layout, int dp_rank);
// Whether DP rank dp_rank stores an optimizer file (ZeRO 1: every rank; ZeRO 0:
// DP rank 0 only, its state being identical on every DP rank).
inline bool stores_optimizer_file(const Layout& layout, int dp_rank) {
  return layout.zero == 1 || dp_rank == 0;
}

std::string model_file_name(int tp_rank);                   // "model-tp00.h5"
std::string optimizer_file_name(int tp_rank, int dp_rank);  // "optim-tp00-dp00.h5"

// "step-00001000"
std::string step_dir_name(int64_t step);
// Parses "step-NNNNNNNN" (at least 8 digits, nothing else); -1 otherwise.
int64_t parse_step_dir_name(const std::string& name);

}  // namespace chorus::checkpoint
