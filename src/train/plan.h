// What a training job needs before it runs (`chorus plan`, docs/PLAN.md):
// per rank the parameter, gradient, optimizer and activation memory of a
// layout, the FLOPs of one optimizer step and an estimated step time; and the
// check `pretrain` / `finetune-speech` make before allocating that the layout
// fits in memory. The sizes come from the models' own sizing functions
// (models::gpt_memory, models::speech_seq2seq_memory, optim::owned_range),
// the same code the constructors allocate with.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "models/gpt/gpt.h"
#include "models/speech/seq2seq.h"

namespace chorus::dist {
class Communicator;
}

namespace chorus::train {

struct PretrainOptions;
struct FinetuneSpeechOptions;

// A parallel layout: DP x TP ranks, ZeRO stage, compute precision.
struct Layout {
  int dp = 1;
  int tp = 1;
  int zero = 0;
  Precision precision = Precision::fp32;
  int world() const { return dp * tp; }
};

struct JobPlan {
  std::string model;              // e.g. "GPT L6 d384 h6 vocab 8192 context 256"
  std::string work;               // e.g. "batch 8 x seq 256 x accum 1 x dp 2"
  Layout layout;
  size_t n_params = 0;            // floats of the parameter buffer on one rank (its TP shard)
  size_t n_flop_params = 0;       // parameters counted for FLOPs (the whole model)
  models::GptMemory memory;       // per rank: masters, compute copy, gradients, activations
  size_t optimizer_bytes = 0;     // Adam moments of the rank with the largest ZeRO-1 slice
  double items_per_step = 0.0;    // tokens (GPT) or 10 ms frames (speech) per optimizer step
  const char* item_unit = "tokens";
  double flops_per_step = 0.0;    // training FLOPs of one optimizer step over all ranks (MFU numerator)
  // Bytes one rank holds: parameters (+ compute copy), gradients, optimizer state, activations.
  size_t total_bytes() const {
    return memory.master_bytes + memory.compute_weight_bytes + memory.grad_bytes + optimizer_bytes +
           memory.activation_bytes;
  }
  // Seconds of one step when every rank runs at gflops_per_rank x mfu.
  double step_seconds(double gflops_per_rank, double mfu) const {
    return flops_per_step / (gflops_per_rank * 1e9 * mfu * layout.world());
  }
};

// Training FLOPs of one pretraining step: the GPT's FLOPs per token at
// sequence length T times tokens_per_step (what the loop's MFU uses).
double pretrain_flops_per_step(const models::GptConfig& cfg, int seq_len, double tokens_per_step);
// Training FLOPs of one speech fine-tuning step of clips_per_step clips of
// avg_frames frames (the encoder) and max_tokens decoder positions, half of
// them counted as used (a transcript's typical length); with_decoder false: a
// CTC-only step (the encoder alone).
double speech_flops_per_step(const models::SpeechSeq2SeqConfig& cfg, double avg_frames, int max_tokens,
                             double clips_per_step, bool with_decoder = true);

// The plan of `pretrain` with o's model, batch, seq-len and grad-accum (o.model.vocab_size must be set).
JobPlan plan_pretrain(const PretrainOptions& o, const Layout& layout);
// The plan of `finetune-speech` with o's encoder, batch, max-tokens and grad-accum and the
// resolved model cfg; avg_frames: the mean clip length in 10 ms frames (the train split's).
JobPlan plan_finetune_speech(const FinetuneSpeechOptions& o, const models::SpeechSeq2SeqConfig& cfg,
                             const Layout& layout, double avg_frames);

// Refuses, before anything is allocated, a plan whose total_bytes() exceed a
// rank's share: max_memory_gib (> 0, per rank) or else MemAvailable divided
// by the ranks on this host (core/meminfo.h). Collective over world (the ranks agree on the
// smallest share). Throws chorus::AgreedError (on every rank) naming the flags
// that shrink the job.
void check_plan_fits(const JobPlan& plan, double max_memory_gib, dist::Communicator& world, const std::string& job,
                     const std::string& flags);

// A multi-line report of the plan (what `chorus plan` prints), with the step
// time at gflops_per_rank x mfu and the time of `steps` steps (0: not shown).
std::string describe_plan(const JobPlan& plan, double gflops_per_rank, const std::string& gflops_source,
                          double mfu, int64_t steps);

}  // namespace chorus::train
