// Reading a checkpoint's tensors back as global tensors, and cutting one
// rank's shard out of them: the machinery behind resharding (at start-up and
// offline), `checkpoint hash`, `verify` and `export`. Memory is O(model).
#pragma once

#include <span>
#include <string>
#include <vector>

#include "checkpoint/layout.h"
#include "checkpoint/manifest.h"

namespace chorus::checkpoint {

// Checks each listed file's existence, size and SHA-256 against its manifest
// entry (several files in parallel). Throws CorruptCheckpoint naming the
// first bad file: missing, truncated / wrong size, or a digest mismatch.
void verify_files(const std::string& dir, const std::vector<const FileRecord*>& files);
// The same for every file; returns one message per bad file (empty: all good).
std::vector<std::string> check_all_files(const std::string& dir, const Manifest& m);

// The index of the first NaN or Inf of p[0, n) (n: all are finite).
size_t first_nonfinite(const float* p, size_t n);
// Reads every file of the checkpoint in `dir` (manifest m) and returns one
// message per tensor (parameters, or a moment in an optimizer file) holding a
// NaN or Inf, naming the file and the tensor (empty: all finite).
std::vector<std::string> check_finite(const std::string& dir, const Manifest& m);

// The global (unsharded) tensors of a checkpoint, flat in manifest tensor
// order at `offsets`.
struct GlobalState {
  std::vector<size_t> offsets;
  size_t n_global = 0;
  std::vector<float> params;
  std::vector<float> exp_avg, exp_avg_sq;  // empty unless read with the optimizer state
};

// Verifies and reads every model file (and every optimizer file when
// with_optimizer) of the checkpoint in `dir` whose manifest is m, and places
// each shard in its global tensor. Throws CorruptCheckpoint for damaged
// files, chorus::Error for inconsistent contents (naming file and tensor).
GlobalState read_global(const std::string& dir, const Manifest& m, bool with_optimizer);

// Cuts TP rank tp_rank of tp's shard out of global tensors: params gets the
// TP-local flat buffer (tensors contiguous in table order); exp_avg /
// exp_avg_sq (may be empty) get the optimizer state over opt_range of it.
void cut_rank(const std::vector<TensorInfo>& tensors, const GlobalState& g, int tp, int tp_rank,
              FlatRange opt_range, std::span<float> params, std::span<float> exp_avg,
              std::span<float> exp_avg_sq);

}  // namespace chorus::checkpoint
