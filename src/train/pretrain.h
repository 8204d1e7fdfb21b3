// The GPT pretraining loop: gradient accumulation, AdamW with warmup + cosine
// LR, global-norm clipping, periodic validation (loss and bits per byte), one
// log line per step and metrics.jsonl, final weights saved in the run directory;
// sharded checkpoints every N steps, at the end and on a stop (--stop-at, or
// SIGTERM / SIGUSR1 on any rank), and exact resume from them
// (docs/CHECKPOINTS.md).
#pragma once

#include <cstdint>
#include <string>

#include "dist/grid.h"
#include "models/gpt/gpt.h"
#include "core/dtype.h"
#include "optim/adamw.h"
#include "optim/loss_scaler.h"

namespace chorus::train {

// Exit code of `chorus pretrain` when SIGTERM or SIGUSR1 stopped it after a
// checkpoint (EX_TEMPFAIL: "try again"); launch/slurm/pretrain.sbatch requeues
// the job on it and the next run continues with --resume auto.
inline constexpr int kExitPreempted = 75;

struct PretrainOptions {
  models::GptConfig model;        // model.vocab_size 0 = take the tokenizer's
  std::string tokenizer_path;     // tokenizer JSON (its hash must match the shards')
  std::string data_dir;           // directory with train_*.h5 and val_*.h5 shards
  std::string run_dir;            // metrics.jsonl, model.h5, config.json go here
  int batch = 8;                  // sequences per micro-batch
  int seq_len = 256;              // T (<= model.context)
  int grad_accum = 1;             // micro-batches per optimizer step
  int64_t steps = 1000;           // optimizer steps (the LR schedule's length)
  uint64_t seed = 1337;           // init, data order and sampling
  float lr = 6e-4f;
  float min_lr = 6e-5f;
  int64_t warmup = 100;
  float grad_clip = 1.0f;         // <= 0: no clipping
  optim::AdamWConfig adamw;
  // Mixed precision (docs/DESIGN.md "Mixed precision"): the dtype of
  // activations and the compute copy of the weights; masters, gradients and
  // Adam state stay fp32. Loss scaling is meant for fp16 (loss_scaler.enabled).
  Precision precision = Precision::fp32;
  optim::LossScalerConfig loss_scaler;
  // Consecutive skipped (non-finite) steps after which the run stops with an error.
  int max_skipped_in_a_row = 20;
  int64_t eval_every = 100;       // validate every N steps and at the end (0: only at the end)
  int eval_batches = 8;           // validation micro-batches each time
  int log_every = 1;              // print a step line every N steps
  double peak_gflops = 0.0;       // MFU denominator; 0 = measure sgemm at start
  int sample_tokens = 0;          // > 0: generate a sample of this many tokens at the end
  float sample_temperature = 0.8f;
  int sample_top_k = 40;
  bool quiet = false;             // no step lines (tests)
  // Parallel layout: the grid's DP x TP ranks (nullptr = one process). batch
  // is per DP rank, so the global batch is batch x grad_accum x dp.
  dist::ParallelGrid* grid = nullptr;
  int zero_stage = 0;             // 1: shard optimizer state over DP (ZeRO-1)
  double bucket_mb = 16.0;        // DP all-reduce bucket size
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
  // Overflow injection for tests: world rank nonfinite_rank writes Inf into its
  // gradients at step nonfinite_step (CHORUS_INJECT_INF="rank:step"; -1 = never).
  int nonfinite_rank = -1;
  int64_t nonfinite_step = -1;
};

struct PretrainResult {
  int64_t steps_done = 0;
  float first_loss = 0.0f;        // training loss of step 0
  float last_loss = 0.0f;         // training loss of the last step
  float val_loss = 0.0f;          // final validation loss (nats/token)
  float val_bpb = 0.0f;           // final validation bits per byte
  double tokens_per_s = 0.0;      // median over the timed steps (after the first)
  double mfu = 0.0;               // median MFU
  std::string weights_path;       // <run_dir>/model.h5
  std::string sample;             // generated text when sample_tokens > 0
  int64_t start_step = 0;         // the step this invocation started from (> 0: resumed)
  bool stopped = false;           // ended before `steps` (--stop-at or a signal), after a checkpoint
  int stop_signal = 0;            // the signal that stopped it (0: none)
  std::string checkpoint;         // the last checkpoint written ("" = none)
  int64_t skipped_steps = 0;      // steps skipped for non-finite gradients (loss scaling)
  double loss_scale = 1.0;        // the loss scale at the end
};

PretrainResult pretrain(const PretrainOptions& opt);

}  // namespace chorus::train
