// manifest.json of a sharded checkpoint (docs/CHECKPOINTS.md): everything a
// run needs to continue besides the tensors — format version, model config,
// tokenizer hash, step, tokens seen, sampler state, LR-schedule position,
// optimizer hyper-parameters and update count, loss-scaler state, the
// parallel layout, every rank's RNG state, the tensor table and, for each
// file, its role, size and SHA-256. The manifest carries its own SHA-256
// (field "manifest_sha256", over the canonical dump without that field), so
// a flipped bit in it is detected too.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checkpoint/layout.h"
#include "core/error.h"
#include "core/rng.h"
#include "models/gpt/gpt.h"

namespace chorus::checkpoint {

// A checkpoint whose bytes are damaged or incomplete: a missing, truncated or
// bit-flipped file, an unreadable manifest. `--resume auto` skips such a
// checkpoint (with a warning) for the previous one; every other use refuses it.
// Other errors (a config or tokenizer that differs from the run's, an unknown
// format version) are plain chorus::Error and always refused.
class CorruptCheckpoint : public Error {
 public:
  using Error::Error;
};

inline constexpr const char* kManifestFormat = "chorus-checkpoint";
inline constexpr int kManifestVersion = 1;

struct FileRecord {
  std::string path;  // relative to the checkpoint directory
  std::string kind;  // "model" | "optimizer"
  int tp_rank = 0;
  int dp_rank = 0;          // optimizer files: the DP rank whose slice it holds
  uint64_t flat_begin = 0;  // optimizer files: [flat_begin, flat_end) of the TP rank's
  uint64_t flat_end = 0;    //   flat buffer of flat_numel floats
  uint64_t flat_numel = 0;
  uint64_t bytes = 0;
  std::string sha256;
};

struct RankRng {
  int world_rank = 0;
  int dp_rank = 0;
  int tp_rank = 0;
  Rng::State state{};
};

struct SamplerState {
  uint64_t consumed = 0;          // global training samples consumed (data/loader.h)
  uint64_t seed = 0;              // sampler seed (the run's seed)
  int seq_len = 0;                // tokens per sample
  uint64_t samples_per_step = 0;  // global batch in samples (batch x grad-accum x dp)
};

struct ScheduleState {
  int64_t position = 0;  // optimizer steps taken (the next step's index)
  float max_lr = 0, min_lr = 0;
  int64_t warmup = 0;
  int64_t total_steps = 0;
  std::string kind = "cosine";  // optim::schedule_name (absent in older manifests: cosine)
  double decay_frac = 0.2;      // wsd only
};

struct OptimizerState {
  // "adamw" | "muon" (optim::optimizer_name; absent: adamw). With muon the
  // optimizer files' exp_avg holds Muon's momentum in the Muon matrices'
  // ranges (their exp_avg_sq stays 0), AdamW's moments elsewhere.
  std::string type = "adamw";
  int64_t t = 0;  // AdamW updates taken (bias correction)
  float beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0, grad_clip = 0;
  float muon_lr = 0, muon_momentum = 0;  // muon only
  bool muon_nesterov = true;
  // muon only: the tensors Muon updates (count and floats; -1 = not recorded,
  // manifests before it): a run resumes only with the same set.
  int64_t muon_tensors = -1, muon_floats = -1;
};

struct LossScalerState {
  bool enabled = false;  // fp32 / bf16 training: no loss scaling
  double scale = 1.0;
  int64_t good_steps = 0;     // consecutive finite steps since the scale last changed
  int64_t skipped_steps = 0;  // steps skipped for non-finite gradients so far
};

struct Manifest {
  int format_version = kManifestVersion;
  // What the checkpoint holds: "gpt" (a GPT; `model` is its config) or
  // "speech" (a speech encoder-decoder; `model` is its GPT decoder's config and
  // `model_extra` the rest of its config). Older manifests lack the field: "gpt".
  std::string model_type = "gpt";
  models::GptConfig model;
  nlohmann::json model_extra;  // null for "gpt"
  std::string tokenizer_hash;
  int64_t eot_token = -1;  // <|endoftext|> id (export's config.json), -1 = unknown
  int64_t step = 0;        // optimizer steps completed
  uint64_t tokens_seen = 0;
  SamplerState sampler;
  ScheduleState schedule;
  OptimizerState optimizer;
  LossScalerState loss_scaler;
  // The compute dtype the run trained in ("fp32", "bf16", "fp16"); the
  // weights in the files are always the fp32 masters, so any precision loads.
  std::string precision = "fp32";
  Layout layout;
  std::vector<RankRng> rng;  // by world rank (may be empty after an offline reshard)
  std::vector<TensorInfo> tensors;
  std::vector<FileRecord> files;
  nlohmann::json run;   // informational (batch, grad-accum, lr, ...); never checked
  std::string created;  // UTC time of the save

  uint64_t total_bytes() const;
  const RankRng* rng_of(int world_rank) const;
};

// Puts file records in their canonical order: model files by TP rank, then
// optimizer files by (TP rank, DP rank).
void sort_files(std::vector<FileRecord>& files);

nlohmann::json manifest_to_json(const Manifest& m);  // includes manifest_sha256
// Parses and validates (format, version, types, self-hash); `where` names the
// file in errors. Throws chorus::Error naming the field and what was expected
// (CorruptCheckpoint when the self-hash does not match).
Manifest manifest_from_json(const nlohmann::json& j, const std::string& where);
void write_manifest(const std::string& path, const Manifest& m);  // durable (fsync)
// Throws CorruptCheckpoint when the file is missing, unreadable or not JSON.
Manifest read_manifest(const std::string& path);

// Checks that the file list is complete and consistent with the layout and
// the tensor table: one model file per TP rank, the optimizer files the
// layout stores, whose ranges tile each TP rank's buffer. Throws naming the
// missing or inconsistent entry.
void check_complete(const Manifest& m, const std::string& where);

// Refuses a checkpoint whose model config or tokenizer differs from the run's,
// naming the field and both values.
void check_matches_run(const Manifest& m, const std::string& where, const models::GptConfig& config,
                       const std::string& tokenizer_hash, const std::string& model_type = "gpt",
                       const nlohmann::json& model_extra = nullptr);
// Refuses a tensor table different from the model's (names, shapes, splits).
void check_tensors_match(const Manifest& m, const std::string& where, const std::vector<TensorInfo>& model);

std::string utc_now();

}  // namespace chorus::checkpoint
