#include "optim/distributed.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace chorus::optim {

std::vector<Range> clip_ranges(const std::vector<Range>& ranges, Range window) {
  std::vector<Range> out;
  for (const auto& r : ranges) {
    const size_t b = std::max(r.begin, window.begin), e = std::min(r.end, window.end);
    if (b < e) out.push_back({b - window.begin, e - window.begin});
  }
  return out;
}

Range owned_range(size_t n, int zero_stage, int dp_size, int dp_rank) {
  if (zero_stage != 1) return {0, n};
  return {dist::chunk_begin(n, dp_size, dp_rank), dist::chunk_begin(n, dp_size, dp_rank + 1)};
}

DistributedOptimizer::DistributedOptimizer(size_t n, std::vector<Range> decay, std::vector<Range> tp_replicated,
                                           const DistributedOptimizerConfig& cfg, dist::Communicator& dp,
                                           dist::Communicator& tp)
    : cfg_(cfg), dp_(dp), tp_(tp), n_(n), tp_replicated_(std::move(tp_replicated)) {
  CHORUS_CHECK(cfg.zero_stage == 0 || cfg.zero_stage == 1, "zero: must be 0 or 1, got %d", cfg.zero_stage);
  CHORUS_CHECK(cfg.bucket_floats > 0, "bucket-mb: must be > 0");
  std::sort(tp_replicated_.begin(), tp_replicated_.end(),
            [](const Range& a, const Range& b) { return a.begin < b.begin; });
  CHORUS_CHECK(cfg.grad_reduce_dtype == dist::DType::f32 || cfg.grad_reduce_dtype == dist::DType::bf16,
               "grad-reduce-dtype: must be fp32 or bf16");
  const bool bf16_reduce = cfg.grad_reduce_dtype == dist::DType::bf16 && dp.size() > 1;
  owned_ = owned_range(n, cfg.zero_stage, dp.size(), dp.rank());
  if (cfg.zero_stage == 1) {
    grad_shard_.resize(owned_.end - owned_.begin);
    if (bf16_reduce) {
      reduce_buf_.resize(n);
      reduce_shard_.resize(grad_shard_.size());
    }
  } else {
    if (bf16_reduce) reduce_buf_.resize(std::min(n, cfg.bucket_floats));
  }
  adamw_ = std::make_unique<AdamW>(owned_.end - owned_.begin, clip_ranges(decay, owned_), cfg.adamw);
}

double DistributedOptimizer::sum_squares(const float* g, Range r) const {
  // g points at buffer position r.begin. Sharded part: summed over TP;
  // replicated part: counted once (every TP rank holds the same values).
  const double all = [&] {
    double s = 0.0;
    const size_t n = r.end - r.begin;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (size_t i = 0; i < n; ++i) s += static_cast<double>(g[i]) * g[i];
    return s;
  }();
  double replicated = 0.0;
  for (const auto& rr : clip_ranges(tp_replicated_, r))
    for (size_t i = rr.begin; i < rr.end; ++i) replicated += static_cast<double>(g[i]) * g[i];
  double sharded = all - replicated;
  if (tp_.size() > 1) sharded = tp_.all_reduce_scalar(sharded, dist::ReduceOp::sum);
  return sharded + replicated;
}

bool DistributedOptimizer::unscale_and_check(std::span<float> grads, double scale) const {
  const float inv = static_cast<float>(1.0 / scale);
  const bool rescale = scale != 1.0;
  const long n = static_cast<long>(grads.size());
  float* g = grads.data();
  int bad = 0;
#pragma omp parallel for reduction(| : bad) schedule(static)
  for (long i = 0; i < n; ++i) {
    if (rescale) g[i] *= inv;
    bad |= !std::isfinite(g[i]);
  }
  return bad != 0;
}

void DistributedOptimizer::all_reduce_grads(std::span<float> grads) {
  if (dp_.size() == 1) return;
  for (size_t b = 0; b < n_; b += cfg_.bucket_floats) {
    const size_t len = std::min(cfg_.bucket_floats, n_ - b);
    if (reduce_buf_.empty()) {
      dp_.all_reduce(grads.data() + b, len, dist::ReduceOp::avg);
    } else {
      convert(reduce_buf_.data(), grads.data() + b, len);
      dp_.all_reduce(reduce_buf_.data(), len, dist::DType::bf16, dist::ReduceOp::avg);
      convert(grads.data() + b, reduce_buf_.data(), len);
    }
  }
}

StepStats DistributedOptimizer::step(std::span<float> params, std::span<float> grads, float lr, int64_t t,
                                     const StepOptions& so) {
  const StepStats st = reduce(grads, so);
  if (!st.skipped) apply(params, grads, lr, t, st, so);
  return st;
}

StepStats DistributedOptimizer::reduce(std::span<float> grads, const StepOptions& so) {
  CHORUS_CHECK(grads.size() == n_, "optimizer: a gradient buffer of %zu floats, expected %zu", grads.size(), n_);
  CHORUS_CHECK(so.grad_scale > 0.0 && std::isfinite(so.grad_scale), "optimizer: gradient scale %g is not > 0",
               so.grad_scale);
  StepStats st;
  if (so.skip_nonfinite || so.grad_scale != 1.0) {
    const bool bad = unscale_and_check(grads, so.grad_scale);
    if (so.skip_nonfinite) {
      // Every DP and TP rank must agree: max over DP, then over TP, is the world's.
      double any = bad ? 1.0 : 0.0;
      if (dp_.size() > 1) any = dp_.all_reduce_scalar(any, dist::ReduceOp::max);
      if (tp_.size() > 1) any = tp_.all_reduce_scalar(any, dist::ReduceOp::max);
      if (any != 0.0) {
        st.grad_norm = std::numeric_limits<double>::infinity();
        st.skipped = true;
        return st;
      }
    }
  }
  // TP-replicated tensors (LayerNorms, row-parallel biases, wpe) get the same
  // gradient on every TP rank by construction; averaging them over TP keeps
  // the replicas identical even if a rank ever sums in another order (e.g.
  // another OpenMP thread count). Averaging equal values is exact for TP 2.
  if (tp_.size() > 1)
    for (const auto& r : tp_replicated_) tp_.all_reduce(grads.data() + r.begin, r.end - r.begin, dist::ReduceOp::avg);
  if (cfg_.zero_stage == 0) {
    all_reduce_grads(grads);
    st.grad_norm = std::sqrt(sum_squares(grads.data(), {0, n_}));
    return st;
  }
  // ZeRO-1
  if (reduce_buf_.empty()) {
    dp_.reduce_scatter(grads.data(), grad_shard_.data(), n_, dist::DType::f32, dist::ReduceOp::avg);
  } else {
    convert(reduce_buf_.data(), grads.data(), n_);
    dp_.reduce_scatter(reduce_buf_.data(), reduce_shard_.data(), n_, dist::DType::bf16, dist::ReduceOp::avg);
    convert(grad_shard_.data(), reduce_shard_.data(), grad_shard_.size());
  }
  double ss = sum_squares(grad_shard_.data(), owned_);
  ss = dp_.all_reduce_scalar(ss, dist::ReduceOp::sum);
  st.grad_norm = std::sqrt(ss);
  return st;
}

void DistributedOptimizer::apply(std::span<float> params, std::span<float> grads, float lr, int64_t t,
                                 const StepStats& st, const StepOptions& so) {
  CHORUS_CHECK(params.size() == n_ && grads.size() == n_, "optimizer: buffers of %zu / %zu floats, expected %zu",
               params.size(), grads.size(), n_);
  CHORUS_CHECK(!st.skipped, "optimizer: apply() after a reduce() that skipped the step");
  if (cfg_.zero_stage == 0) {
    clip_by_global_norm(grads, st.grad_norm, cfg_.grad_clip);
    adamw_->step(params, grads, lr, t, so.lr_scales);
    return;
  }
  clip_by_global_norm(grad_shard_, st.grad_norm, cfg_.grad_clip);
  std::span<float> mine = params.subspan(owned_.begin, owned_.end - owned_.begin);
  std::vector<LrScaleRange> local;  // the lr ranges within this rank's chunk, shifted to start at 0
  for (const LrScaleRange& s : so.lr_scales)
    for (const Range& r : clip_ranges({s.range}, owned_)) local.push_back({r, s.lr_scale});
  adamw_->step(mine, grad_shard_, lr, t, local);
  dp_.all_gather(params.data() + owned_.begin, params.data(), n_, dist::DType::f32);
}

}  // namespace chorus::optim
