// The optimizer step of a data-parallel x tensor-parallel run (DESIGN.md
// "Data parallel"), over one rank's flat parameter / gradient buffers:
//   zero 0: average the gradients over the DP group with all-reduces in
//           buckets of bucket_floats, then every DP rank runs AdamW on the
//           whole buffer (replicated optimizer state);
//   zero 1: reduce-scatter the gradients over DP (average), each DP rank runs
//           AdamW on its contiguous chunk of the buffer only (its fp32 masters
//           and Adam moments), then all-gather the updated parameters.
//           Optimizer memory per rank falls by the DP degree.
// With Muon (cfg.kind == muon, optim/muon.h, docs/OPTIMIZERS.md) the ranges of
// cfg.muon_matrices are updated by Muon instead of AdamW, its momentum held in
// AdamW's first-moment buffer at the same positions (one checkpoint format):
//   zero 0: every DP rank orthogonalises every matrix (the same averaged
//           gradients, so the same result as one rank);
//   zero 1: each rank updates the momentum of the Muon elements of its chunk,
//           the Nesterov inputs are all-gathered over DP, matrix k (in table
//           order) is orthogonalised and applied by DP rank k % dp only, and
//           broadcast from it to the other DP ranks afterwards;
//   TP:     a sharded matrix is gathered over the TP group, orthogonalised as
//           the whole matrix, and each rank keeps its shard of the result.
// Gradients of TP-replicated tensors are first averaged over the TP group.
// The global gradient norm counts tensors sharded over TP on every TP rank
// and TP-replicated tensors (LayerNorm, row-parallel biases, wpe) once, so it
// equals the single-rank norm. Clipping uses that norm on every rank.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <vector>

#include "core/dtype.h"
#include "dist/communicator.h"
#include "optim/adamw.h"
#include "optim/muon.h"

namespace chorus::optim {

struct DistributedOptimizerConfig {
  AdamWConfig adamw;
  int zero_stage = 0;          // 0 or 1
  size_t bucket_floats = 1 << 22;  // all-reduce bucket (zero 0)
  float grad_clip = 1.0f;      // <= 0: off
  // dtype of the DP gradient reduction: f32 (exact average of the fp32
  // gradients) or bf16 (half the bytes on the wire; each gradient is rounded
  // to 8 mantissa bits before and after the sum, about 0.4% relative error per
  // element, and the sum rounds at each combine).
  dist::DType grad_reduce_dtype = dist::DType::f32;
  // adamw: AdamW everywhere; muon: Muon on muon_matrices (this rank's view of
  // the model's hidden matrices), AdamW on the rest.
  OptimizerKind kind = OptimizerKind::adamw;
  MuonConfig muon;
  std::vector<MuonMatrix> muon_matrices;
};

struct StepOptions {
  // The loss was multiplied by this before backward (loss scaling): the
  // gradients are divided by it before anything else. 1 = unscaled.
  double grad_scale = 1.0;
  // Check every rank's gradients for Inf/NaN (agreed over DP and TP); if any
  // holds one, skip the update on every rank (parameters and moments untouched).
  bool skip_nonfinite = false;
  // Ranges of the (whole, unsharded) buffer with their own learning-rate
  // factor (0 = frozen); the rest trains at lr.
  std::vector<LrScaleRange> lr_scales;
  // Muon's learning rate for this step (the schedule applied to its peak);
  // an lr_scales range scales it too, and must then cover whole matrices.
  float muon_lr = 0.0f;
};

struct StepStats {
  double grad_norm = 0.0;      // before clipping (Inf when skipped)
  bool skipped = false;        // non-finite gradients somewhere: no update was made
};

// The chunk of an n-float buffer that DP rank dp_rank of dp_size updates:
// with ZeRO-1 its contiguous slice (chunk_begin), else all of it.
Range owned_range(size_t n, int zero_stage, int dp_size, int dp_rank);
// Bytes of optimizer state (the two fp32 Adam moments) of n_owned floats.
inline size_t adam_state_bytes(size_t n_owned) { return n_owned * 2 * sizeof(float); }

class DistributedOptimizer {
 public:
  // n: length of this rank's parameter buffer; decay: ranges with weight
  // decay; tp_replicated: ranges whose tensors are identical on every TP rank.
  DistributedOptimizer(size_t n, std::vector<Range> decay, std::vector<Range> tp_replicated,
                       const DistributedOptimizerConfig& cfg, dist::Communicator& dp, dist::Communicator& tp);

  // Synchronises grads over DP, clips by the global norm, applies AdamW with
  // learning rate lr (t = 1-based update count) and leaves identical
  // parameters on every DP rank. grads is used as scratch. The same as
  // reduce() followed, unless it skipped, by apply().
  StepStats step(std::span<float> params, std::span<float> grads, float lr, int64_t t,
                 const StepOptions& so = {});
  // The first half of step(), collective: unscales and checks (skip_nonfinite)
  // the gradients, averages them over TP (replicated tensors) and DP, and
  // computes the global norm, the same on every rank. Changes no parameter or
  // moment, so a caller may still decide to skip the update (train/loop.cpp
  // does for a non-finite loss or gradient norm).
  StepStats reduce(std::span<float> grads, const StepOptions& so = {});
  // The second half: clips the reduced gradients by st.grad_norm, applies
  // AdamW and (ZeRO-1) all-gathers the parameters. Only after a reduce() of
  // the same grads that did not skip; collective over DP with ZeRO-1.
  void apply(std::span<float> params, std::span<float> grads, float lr, int64_t t, const StepStats& st,
             const StepOptions& so = {});

  // The chunk of the buffer this rank updates ([0, n) without ZeRO).
  Range owned() const { return owned_; }
  // Bytes of optimizer state (Adam moments) held by this rank.
  size_t state_bytes() const { return adam_state_bytes(adamw_->size()); }
  AdamW& adamw() { return *adamw_; }
  // The matrices Muon updates (empty with AdamW), sorted by offset.
  const std::vector<MuonMatrix>& muon_matrices() const { return muon_; }

 private:
  double sum_squares(const float* g, Range r) const;  // TP-aware, over buffer range r
  DistributedOptimizerConfig cfg_;
  dist::Communicator& dp_;
  dist::Communicator& tp_;
  size_t n_;
  Range owned_;
  std::vector<Range> tp_replicated_;
  std::unique_ptr<AdamW> adamw_;
  // Divides grads by scale (if not 1) and says whether this rank's hold an Inf/NaN.
  bool unscale_and_check(std::span<float> grads, double scale) const;
  // Averages grads over DP (zero 0) in buckets, in the configured dtype.
  void all_reduce_grads(std::span<float> grads);

  // Muon: m = mu m + g and g = the Nesterov input, elementwise over n floats.
  void muon_momentum(float* m, float* g, size_t n) const;
  // Muon: u (this rank's shard of matrix mm, in place) becomes its shard of
  // the orthogonalised whole matrix. Collective over TP for sharded matrices.
  void orthogonalise(const MuonMatrix& mm, float* u);
  // The lr_scales factor of a whole matrix (1 if no range touches it).
  float muon_lr_scale(const MuonMatrix& mm, std::span<const LrScaleRange> lr_scales) const;
  void apply_muon(std::span<float> params, std::span<float> grads, const StepOptions& so);

  std::vector<MuonMatrix> muon_;
  std::vector<float> ns_gather_;   // every TP rank's shard of one matrix
  std::vector<float> ns_global_;   // one whole matrix
  std::vector<float> ns_scratch_;  // newton_schulz5's
  std::vector<float> grad_shard_;  // zero 1: this rank's reduced gradient chunk
  std::vector<bf16> reduce_buf_;   // bf16 reduction: the rounded gradients (a bucket, or all with zero 1)
  std::vector<bf16> reduce_shard_; // bf16 reduction with zero 1: the reduced chunk
};

// Intersects ranges with [window.begin, window.end) and shifts them to start at 0.
std::vector<Range> clip_ranges(const std::vector<Range>& ranges, Range window);

}  // namespace chorus::optim
