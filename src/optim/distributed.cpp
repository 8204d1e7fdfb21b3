#include "optim/distributed.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "nn/tp_shard.h"

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
  std::vector<Range> muon_ranges;
  if (cfg.kind == OptimizerKind::muon) {
    CHORUS_CHECK(cfg.muon.momentum >= 0 && cfg.muon.momentum < 1, "muon-momentum: must be in [0, 1), got %g",
                 cfg.muon.momentum);
    CHORUS_CHECK(cfg.muon.lr >= 0, "muon-lr: must be >= 0, got %g", cfg.muon.lr);
    CHORUS_CHECK(cfg.muon.ns_steps >= 1, "Muon: Newton-Schulz steps must be >= 1, got %d", cfg.muon.ns_steps);
    muon_ = cfg.muon_matrices;
    std::sort(muon_.begin(), muon_.end(), [](const MuonMatrix& a, const MuonMatrix& b) { return a.offset < b.offset; });
    size_t gather = 0, global = 0, scratch = 0, prev_end = 0;
    for (const MuonMatrix& mm : muon_) {
      const size_t whole = static_cast<size_t>(mm.rows) * static_cast<size_t>(mm.cols);
      const bool sharded = mm.tp_axis >= 0 && tp.size() > 1;
      CHORUS_CHECK(mm.rows > 0 && mm.cols > 0 && mm.tp_parts >= 1 && mm.rows % mm.tp_parts == 0 &&
                       mm.tp_axis >= -1 && mm.tp_axis <= 1 && (mm.tp_parts == 1 || mm.tp_axis <= 0),
                   "Muon: tensor '%s' of global shape (%lld, %lld), TP axis %d, %d parts is not a matrix Muon can "
                   "update (parts must split the rows)",
                   mm.name.c_str(), static_cast<long long>(mm.rows), static_cast<long long>(mm.cols), mm.tp_axis,
                   mm.tp_parts);
      CHORUS_CHECK(mm.numel * (sharded ? static_cast<size_t>(tp.size()) : 1) == whole,
                   "Muon: tensor '%s' holds %zu floats on this rank, expected %zu of (%lld, %lld) over TP %d",
                   mm.name.c_str(), mm.numel, sharded ? whole / tp.size() : whole, static_cast<long long>(mm.rows),
                   static_cast<long long>(mm.cols), sharded ? tp.size() : 1);
      CHORUS_CHECK(mm.offset >= prev_end && mm.offset + mm.numel <= n,
                   "Muon: tensor '%s' [%zu, %zu) overlaps another or exceeds the buffer of %zu floats",
                   mm.name.c_str(), mm.offset, mm.offset + mm.numel, n);
      prev_end = mm.offset + mm.numel;
      muon_ranges.push_back({mm.offset, mm.offset + mm.numel});
      if (sharded) gather = std::max(gather, whole);
      global = std::max(global, whole);
      scratch = std::max(scratch, ns_scratch_floats(mm.part_rows(), mm.cols));
    }
    ns_gather_.resize(gather);
    ns_global_.resize(global);
    ns_scratch_.resize(scratch);
  }
  adamw_ = std::make_unique<AdamW>(owned_.end - owned_.begin, clip_ranges(decay, owned_), cfg.adamw,
                                   clip_ranges(muon_ranges, owned_));
}

void DistributedOptimizer::muon_momentum(float* m, float* g, size_t n) const {
  const float mu = cfg_.muon.momentum;
  const bool nesterov = cfg_.muon.nesterov;
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const float mi = mu * m[i] + g[i];
    m[i] = mi;
    g[i] = nesterov ? g[i] + mu * mi : mi;
  }
}

void DistributedOptimizer::orthogonalise(const MuonMatrix& mm, float* u) {
  const bool sharded = mm.tp_axis >= 0 && tp_.size() > 1;
  float* whole = ns_global_.data();
  const nn::ShardSpec spec{{mm.rows, mm.cols}, mm.tp_axis, mm.tp_parts};
  if (sharded) {
    // The whole matrix, not the shard: Newton-Schulz of a shard is not the
    // shard of Newton-Schulz (it mixes all rows through X X^T).
    tp_.all_gather(u, ns_gather_.data(), mm.numel * tp_.size(), dist::DType::f32);
    for (int r = 0; r < tp_.size(); ++r) nn::place_shard(spec, r, tp_.size(), ns_gather_.data() + r * mm.numel, whole);
  } else {
    std::copy(u, u + mm.numel, whole);
  }
  const int64_t pr = mm.part_rows();
  for (int k = 0; k < mm.tp_parts; ++k)
    newton_schulz5(whole + static_cast<size_t>(k) * pr * mm.cols, pr, mm.cols, cfg_.muon.ns_steps, ns_scratch_.data());
  if (sharded)
    nn::slice_shard(spec, tp_.rank(), tp_.size(), whole, u);
  else
    std::copy(whole, whole + mm.numel, u);
}

float DistributedOptimizer::muon_lr_scale(const MuonMatrix& mm, std::span<const LrScaleRange> lr_scales) const {
  const size_t b = mm.offset, e = mm.offset + mm.numel;
  float scale = 1.0f;
  for (const LrScaleRange& s : lr_scales) {
    if (s.range.end <= b || s.range.begin >= e) continue;
    CHORUS_CHECK(s.range.begin <= b && s.range.end >= e,
                 "optimizer: learning-rate range [%zu, %zu) cuts the Muon matrix '%s' [%zu, %zu); a Muon matrix "
                 "trains at one rate",
                 s.range.begin, s.range.end, mm.name.c_str(), b, e);
    scale = s.lr_scale;
  }
  return scale;
}

void DistributedOptimizer::apply_muon(std::span<float> params, std::span<float> grads, const StepOptions& so) {
  float* m = adamw_->m().data();  // Muon's momentum: the first-moment slots of its ranges
  float* g = grads.data();
  float* p = params.data();
  const bool zero1 = cfg_.zero_stage == 1;
  if (!zero1) {
    for (const MuonMatrix& mm : muon_) muon_momentum(m + mm.offset, g + mm.offset, mm.numel);
  } else {
    // Momentum of this rank's chunk, then every rank gets every Nesterov input.
    for (const MuonMatrix& mm : muon_)
      for (const Range& r : clip_ranges({{mm.offset, mm.offset + mm.numel}}, owned_)) {
        muon_momentum(m + r.begin, grad_shard_.data() + r.begin, r.end - r.begin);
        std::copy(grad_shard_.data() + r.begin, grad_shard_.data() + r.end, g + owned_.begin + r.begin);
      }
    dp_.all_gather(g + owned_.begin, g, n_, dist::DType::f32);
  }
  for (size_t k = 0; k < muon_.size(); ++k) {
    const MuonMatrix& mm = muon_[k];
    const float lr = so.muon_lr * muon_lr_scale(mm, so.lr_scales);
    if (lr == 0.0f) continue;  // frozen (the same on every rank): the momentum still updated
    const int owner = zero1 ? static_cast<int>(k % static_cast<size_t>(dp_.size())) : dp_.rank();
    if (owner == dp_.rank()) {
      float* u = g + mm.offset;
      orthogonalise(mm, u);
      const float step = lr * muon_scale(mm.part_rows(), mm.cols);
      float* w = p + mm.offset;
#pragma omp parallel for simd schedule(static)
      for (size_t i = 0; i < mm.numel; ++i) w[i] -= step * u[i];
    }
    if (zero1 && dp_.size() > 1) dp_.broadcast(p + mm.offset, mm.numel, dist::DType::f32, owner);
  }
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
    if (!muon_.empty()) apply_muon(params, grads, so);
    return;
  }
  clip_by_global_norm(grad_shard_, st.grad_norm, cfg_.grad_clip);
  std::span<float> mine = params.subspan(owned_.begin, owned_.end - owned_.begin);
  std::vector<LrScaleRange> local;  // the lr ranges within this rank's chunk, shifted to start at 0
  for (const LrScaleRange& s : so.lr_scales)
    for (const Range& r : clip_ranges({s.range}, owned_)) local.push_back({r, s.lr_scale});
  adamw_->step(mine, grad_shard_, lr, t, local);
  dp_.all_gather(params.data() + owned_.begin, params.data(), n_, dist::DType::f32);
  if (!muon_.empty()) apply_muon(params, grads, so);  // after the all-gather: its broadcasts overwrite the matrices
}

}  // namespace chorus::optim
