// The one training loop of Chorus. Pretraining (train/pretrain.h) and speech
// fine-tuning (train/finetune_speech.h) are a TrainTask each — their model,
// data and loss — and both run through run_training(), which owns everything
// else a job does the same way: gradient accumulation, the DP / ZeRO-1
// optimizer step with global-norm clipping and (fp16) dynamic loss scaling,
// the warmup + cosine LR schedule, the evaluation cadence, one log line per
// step and metrics.jsonl, sharded checkpoints every N steps / at the end / on
// a stop (--stop-at, SIGTERM / SIGUSR1 on any rank) and exact resume from
// them (docs/CHECKPOINTS.md).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoint/manifest.h"
#include "core/dtype.h"
#include "core/error.h"
#include "dist/grid.h"
#include "models/gpt/gpt.h"
#include "optim/adamw.h"
#include "optim/muon.h"
#include "optim/schedule.h"
#include "optim/loss_scaler.h"

namespace chorus::train {

// Exit code of a training job when SIGTERM or SIGUSR1 stopped it after a
// checkpoint (EX_TEMPFAIL: "try again"); launch/slurm/*.sbatch requeue the
// job on it and the next run continues with --resume auto.
inline constexpr int kExitPreempted = 75;
// Exit code of a training job that stopped because training diverged: more
// than --max-bad-steps bad steps in a row (non-finite loss or gradient norm,
// or a norm above --bad-grad-norm), or more than --max-skipped-steps loss-
// scaling overflows in a row. Nothing was saved after the last good state;
// `latest` is the last good checkpoint.
inline constexpr int kExitDiverged = 3;

// Thrown by run_training on every rank together (the decision is collective)
// when training diverged; the apps exit with kExitDiverged.
class TrainingDiverged : public Error {
 public:
  using Error::Error;
};

// A fault injected by a test (environment variables, docs/RELIABILITY.md):
// world rank `rank` at the `count` optimizer steps from `step` (0-based).
struct InjectedFault {
  int rank = -1;  // -1: never
  int64_t step = -1;
  int64_t count = 1;
  bool at(int world_rank, int64_t s) const { return world_rank == rank && s >= step && s < step + count; }
};

// What every training job shares (flags of `pretrain` and `finetune-speech`).
struct TrainOptions {
  std::string run_dir;            // metrics.jsonl, config.json and the final weights go here
  int grad_accum = 1;             // micro-batches per optimizer step
  // Batch-size warmup: over the first batch_warmup steps the micro-batches of a
  // step ramp linearly from 1 to grad_accum (accum_at); 0 = off. The global
  // batch grows with them, as large-batch recipes start small.
  int64_t batch_warmup = 0;
  // Micro-batches of optimizer step `step` (0-based): ceil(grad_accum x (step + 1) / batch_warmup)
  // during the batch warmup, grad_accum after it.
  int accum_at(int64_t step) const;
  // Micro-batches of the steps before `step`, and the step a run is in after
  // `micro_batches` micro-batches (their inverse: a data sampler's consumed count -> step).
  uint64_t micro_batches_before(int64_t step) const;
  int64_t step_after_micro_batches(uint64_t micro_batches) const;
  int64_t steps = 1000;           // optimizer steps (the LR schedule's length)
  uint64_t seed = 1337;           // init, data order and sampling
  float lr = 6e-4f;
  float min_lr = 6e-5f;
  int64_t warmup = 100;
  optim::ScheduleKind schedule = optim::ScheduleKind::cosine;
  double decay_frac = 0.2;        // wsd: the last decay_frac x steps decay linearly to min_lr
  float grad_clip = 1.0f;         // <= 0: no clipping
  optim::AdamWConfig adamw;
  // --optimizer: adamw everywhere, or muon on the model's hidden matrices
  // (ParamSpec::hidden_matrix) and AdamW on the rest (docs/OPTIMIZERS.md).
  // Muon's learning rate follows the same schedule, scaled to muon.lr at the peak.
  optim::OptimizerKind optimizer = optim::OptimizerKind::adamw;
  optim::MuonConfig muon;
  // Mixed precision (docs/DESIGN.md "Mixed precision"): the dtype of
  // activations and the compute copy of the weights; masters, gradients and
  // Adam state stay fp32. Loss scaling is meant for fp16 (loss_scaler.enabled).
  Precision precision = Precision::fp32;
  optim::LossScalerConfig loss_scaler;
  // Consecutive skipped (non-finite) steps after which the run stops with an error.
  int max_skipped_in_a_row = 20;
  // Divergence guard, checked on all-reduced values before the optimizer
  // step: a non-finite loss, a non-finite global gradient norm (not a loss-
  // scaling overflow, which the scaler handles above) or a norm above
  // bad_grad_norm (> 0) makes a bad step, skipped on every rank. More than
  // max_bad_steps bad steps in a row (0: the first) stop the run with
  // TrainingDiverged.
  int max_bad_steps = 5;
  double bad_grad_norm = 0.0;  // 0: only non-finite norms are bad
  int64_t eval_every = 100;       // validate every N steps and at the end (0: only at the end)
  int log_every = 1;              // print a step line every N steps
  // Every N steps gather each rank's step time (its forward + backward,
  // before the gradient sync) over the world: min / median / max and the
  // slowest rank on the step line and in metrics.jsonl (0 = off).
  int64_t rank_stats_every = 50;
  double peak_gflops = 0.0;       // MFU denominator; 0 = measure sgemm at start
  // Memory a rank may use (GiB; 0 = MemAvailable shared by the ranks of a
  // host): a layout that needs more is refused before allocating (train/plan.h).
  double max_memory_gib = 0.0;
  bool quiet = false;             // no step lines (tests)
  // Parallel layout: the grid's DP x TP ranks (nullptr = one process).
  dist::ParallelGrid* grid = nullptr;
  int zero_stage = 0;             // 1: shard optimizer state over DP (ZeRO-1)
  double bucket_mb = 16.0;        // DP all-reduce bucket size
  // A rank that waits this long in one collective while another rank is frozen
  // (or every rank is stuck in one) ends the job, naming both (dist/watchdog.h; 0 = off).
  double watchdog_timeout_s = 600.0;
  dist::DType grad_reduce_dtype = dist::DType::f32;  // f32 or bf16 (DP gradient all-reduce / reduce-scatter)
  // Checkpoints (docs/CHECKPOINTS.md). steps above is the length the LR
  // schedule is built for, not the steps of this invocation.
  std::string save_dir;           // where step-NNNNNNNN/ and `latest` go ("" = run_dir)
  int64_t save_every = 0;         // checkpoint every N steps (0: only at the end and on a stop)
  int keep_last = 0;              // keep only the newest K checkpoints (0 = all)
  std::string resume;             // "" = fresh; "auto" = newest valid in save_dir, else fresh; or a path
  int64_t stop_at = 0;            // > 0: end after step K with a checkpoint, as a pre-emption would
  bool handle_signals = true;     // SIGTERM / SIGUSR1: finish the step, checkpoint, stop
  // Fault injection for tests: throw on world rank fail_rank at step fail_step
  // (from the CHORUS_FAIL_AT="rank:step" environment variable; -1 = never).
  int fail_rank = -1;
  int64_t fail_step = -1;
  // Divergence injection for tests: the rank writes Inf into its gradients
  // (CHORUS_INJECT_INF="rank:step[:count]") or makes its loss NaN
  // (CHORUS_INJECT_NAN_LOSS="rank:step[:count]") at those steps.
  InjectedFault inject_inf_grad;
  InjectedFault inject_nan_loss;
  // Slows every rank by this many milliseconds per step (CHORUS_STEP_DELAY_MS), so
  // that a test can stop a tiny run mid-way however fast the machine is.
  int step_delay_ms = 0;

  void validate() const;  // throws chorus::Error naming the flag
  optim::LrSchedule lr_schedule() const { return {lr, min_lr, warmup, steps, schedule, decay_frac}; }
  // The shared part of <run_dir>/config.json.
  nlohmann::json to_json() const;
};

// A part of the parameter buffer trained at lr_scale times the schedule's
// learning rate (0 = frozen: no update, no weight decay; the Adam moments
// still see its gradients).
struct LrGroup {
  optim::Range range;
  float lr_scale = 1.0f;
};

// A model with its data and loss, as the loop trains it. Collective calls
// (forward/backward under TP, evaluation over DP) are made by every rank in
// the same order.
class TrainTask {
 public:
  virtual ~TrainTask() = default;

  // The model's fp32 masters and gradients (this rank's TP shard) and its
  // parameter table (names, shapes, decay, TP split) in buffer order.
  virtual std::span<float> params() = 0;
  virtual std::span<float> grads() = 0;
  virtual const std::vector<models::ParamSpec>& param_table() const = 0;
  virtual void zero_grad() = 0;
  // One micro-batch of this DP rank: the next batch of its data, forward, and
  // backward of (loss * loss_scale) accumulated into grads(). Returns the
  // micro-batch's loss (the quantity the log averages).
  virtual double train_micro_batch(float loss_scale) = 0;
  // Learning-rate groups for optimizer step `step` (empty: all at 1).
  virtual std::vector<LrGroup> lr_groups(int64_t step) const {
    (void)step;
    return {};
  }
  // Validation: metrics for metrics.jsonl ("val_loss" among them) and the
  // text of the log line after "val ". Collective over the grid.
  virtual nlohmann::json evaluate() = 0;
  virtual std::string describe_eval(const nlohmann::json& metrics) const = 0;

  // Work of one optimizer step over all ranks, for the step line.
  virtual double tokens_per_step() const = 0;  // items counted in the throughput
  virtual const char* throughput_unit() const { return "tok/s"; }
  // Extra columns of this step's metrics.jsonl row (e.g. loss parts; rank 0's view).
  virtual nlohmann::json step_metrics() const { return nlohmann::json::object(); }
  virtual double flops_per_step(int64_t step) const = 0;  // training FLOPs of that step (MFU)
  virtual models::GptMemory memory() const = 0;

  // Sampler state: global training samples consumed.
  virtual uint64_t consumed() const = 0;
  virtual void set_consumed(uint64_t n) = 0;
  // Fills what identifies the model and data in a checkpoint: model_type,
  // model (GPT / decoder config), model_extra, tokenizer hash, eot, sampler
  // seq_len / samples_per_step, run info.
  virtual void describe(checkpoint::Manifest& m) const = 0;
  // Task-specific settings to warn about when they differ from the checkpoint's.
  virtual void warn_differences(const checkpoint::Manifest& m) const { (void)m; }
  // Lines describing the model and data (logged once at the start).
  virtual void log_setup() const = 0;
  // Task-specific entries of config.json.
  virtual nlohmann::json config_json() const = 0;
};

// The tensors of a parameter table that Muon updates (the hidden matrices,
// ParamSpec::hidden_matrix), as the optimizer sees them; in table order.
std::vector<optim::MuonMatrix> muon_matrices(const std::vector<models::ParamSpec>& table);

struct TrainResult {
  int64_t steps_done = 0;
  int64_t start_step = 0;         // the step this invocation started from (> 0: resumed)
  float first_loss = 0.0f;        // training loss of this invocation's first step
  float last_loss = 0.0f;         // training loss of the last step
  nlohmann::json last_eval;       // metrics of the last evaluation (null: none)
  double tokens_per_s = 0.0;      // median over the timed steps (after the first)
  double mfu = 0.0;               // median MFU
  bool stopped = false;           // ended before `steps` (--stop-at or a signal), after a checkpoint
  int stop_signal = 0;            // the signal that stopped it (0: none)
  std::string checkpoint;         // the last checkpoint written ("" = none)
  int64_t skipped_steps = 0;      // steps skipped for non-finite gradients (loss scaling)
  int64_t bad_steps = 0;          // steps skipped as bad (divergence guard) by this invocation
  double loss_scale = 1.0;        // the loss scale at the end
};

// Trains task for opt.steps optimizer steps (from a checkpoint when
// opt.resume says so). Collective over opt.grid. The caller holds the run
// directory (train/run_dir.h RunDirLock). Only after the resume target and the
// room for a checkpoint are checked does it write config.json (every option,
// task.config_json(), the layout and the build: train/run_dir.h run_config)
// and metrics.jsonl in opt.run_dir; the final weights are the caller's to save.
TrainResult run_training(TrainTask& task, const TrainOptions& opt);

}  // namespace chorus::train
