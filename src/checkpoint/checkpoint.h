// Saving and loading the training state as a sharded checkpoint, collectively
// over the DP x TP grid (docs/CHECKPOINTS.md).
//
// save: world rank 0 removes leftovers of interrupted saves (step-*.tmp/ and
// the like), then every rank writes its own files into <save_dir>/step-NNNNNNNN.tmp/ in
// parallel (the DP-rank-0 rank of each TP group its model file; the ranks
// that hold optimizer state their optimizer file), fsyncs and hashes them;
// world rank 0 gathers the file records and RNG states, writes manifest.json,
// fsyncs, renames the directory to step-NNNNNNNN/, fsyncs the save directory,
// then points `latest` at it (a symlink, replaced atomically by rename) and
// only then deletes checkpoints beyond keep_last. A crash at any moment leaves
// `latest` on the previous, complete checkpoint.
//
// load: every rank reads the manifest, refuses a model config / tokenizer /
// tensor table that differs from the run's, then verifies (size + SHA-256)
// and reads the files it needs. Same TP degree: its TP rank's model file and
// the optimizer files overlapping its slice. Other TP degree: every file,
// rebuilt into global tensors and cut again (resharding). Ranks agree on the
// outcome: if any rank fails, every rank throws the same message.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoint/layout.h"
#include "checkpoint/manifest.h"
#include "core/rng.h"
#include "dist/grid.h"

namespace chorus::checkpoint {

// One rank's part of the training state (views into the model and optimizer).
struct RankState {
  std::vector<TensorInfo> tensors;       // the model's table (global shapes, splits)
  std::vector<size_t> offsets;           // each tensor's offset in params
  std::span<float> params;               // this TP rank's flat buffer (fp32 masters)
  FlatRange opt_range;                   // the part of params the optimizer state below covers
  std::span<float> exp_avg, exp_avg_sq;  // Adam moments over opt_range
  Rng::State rng{};                      // this rank's RNG state
  // The kind of model (Manifest::model_type) and the rest of its config
  // (Manifest::model_extra); a checkpoint of another kind or config is refused.
  std::string model_type = "gpt";
  nlohmann::json model_extra;
  // Checks, for TP degree tp, that offsets are the packed table order and the
  // spans are sized to match.
  void validate(int tp) const;
  // "" when every parameter and Adam moment is finite, else the first tensor
  // that holds a NaN or Inf, what (parameters, exp_avg, exp_avg_sq) and where.
  // After validate().
  std::string first_nonfinite() const;
};

struct SaveResult {
  std::string path;  // the committed step directory
  int n_files = 0;
  uint64_t bytes = 0;    // all ranks' files plus the manifest
  double seconds = 0.0;  // wall time of the whole collective save
};

// Collective over the grid's world. meta holds the run's state (step, tokens
// seen, sampler, schedule, optimizer, loss scaler, model, tokenizer, run);
// its layout's tp/dp are taken from the grid, its zero stage kept; tensors,
// files, rng and created are filled here. keep_last > 0: afterwards delete all
// but the newest keep_last checkpoints older than this one. Refuses (on every
// rank, before writing anything or pruning) a state with a NaN or Inf in any
// rank's parameters or optimizer state, naming the tensor: a diverged run
// never replaces good checkpoints.
SaveResult save_checkpoint(dist::ParallelGrid& grid, const std::string& save_dir, Manifest meta,
                           const RankState& state, int keep_last);

struct LoadResult {
  std::string path;
  Manifest manifest;
  uint64_t bytes = 0;  // bytes read by all ranks (files hashed and parsed)
  double seconds = 0.0;
  bool resharded = false;     // saved under another layout
  bool rng_restored = false;  // every rank found its RNG state (same world size)
};

// Collective. Loads the checkpoint directory `dir` into state (whose views
// define the target layout: grid's TP/DP and `zero`). Refuses a config or
// tokenizer other than the run's (tokenizer_hash "" skips that check).
// Throws CorruptCheckpoint for damaged files or a NaN / Inf in the state
// read, chorus::Error otherwise, with the same message on every rank.
LoadResult load_checkpoint(dist::ParallelGrid& grid, const std::string& dir, int zero,
                           const models::GptConfig& config, const std::string& tokenizer_hash,
                           RankState& state);

// Resumes a run (collective): resume = "auto" loads the newest valid
// checkpoint in save_dir (`latest`, then older ones, skipping damaged ones
// with a warning) and returns nullopt when there is none; any other value is
// a checkpoint directory or a save directory with `latest`, loaded or refused.
std::optional<LoadResult> resume_checkpoint(dist::ParallelGrid& grid, const std::string& resume,
                                            const std::string& save_dir, int zero,
                                            const models::GptConfig& config,
                                            const std::string& tokenizer_hash, RankState& state);

// A checkpoint directory from a user's path: a directory with manifest.json,
// or a save directory whose `latest` names one. Throws naming the path.
std::string resolve_checkpoint_dir(const std::string& path);
// Committed checkpoints of a save directory to try on `--resume auto`: the
// one `latest` names first, then older step directories, newest first.
std::vector<std::string> resume_candidates(const std::string& save_dir);

// If any rank of `world` failed (error non-empty), every rank throws the
// failure of the lowest failing rank (CorruptCheckpoint if `corrupt` there and
// no rank had another kind of error). Otherwise returns.
void agree_on_failure(dist::Communicator& world, const std::string& error, bool corrupt);

}  // namespace chorus::checkpoint
