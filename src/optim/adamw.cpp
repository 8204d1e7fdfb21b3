#include "optim/adamw.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace chorus::optim {

AdamW::AdamW(size_t n, std::vector<DecayRange> decay, const AdamWConfig& cfg, std::vector<Range> skip)
    : cfg_(cfg), decay_(std::move(decay)), skip_(std::move(skip)), m_(n, 0.0f), v_(n, 0.0f) {
  std::sort(skip_.begin(), skip_.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  for (size_t i = 0; i < skip_.size(); ++i)
    CHORUS_CHECK(skip_[i].begin <= skip_[i].end && skip_[i].end <= n && (i == 0 || skip_[i].begin >= skip_[i - 1].end),
                 "AdamW: skipped range [%zu, %zu) overlaps another or exceeds the buffer of %zu floats",
                 skip_[i].begin, skip_[i].end, n);
  std::sort(decay_.begin(), decay_.end(), [](const DecayRange& a, const DecayRange& b) { return a.begin < b.begin; });
  size_t prev_end = 0;
  for (const auto& r : decay_) {
    CHORUS_CHECK(r.begin <= r.end && r.end <= n && r.begin >= prev_end,
                 "AdamW: decay range [%zu, %zu) overlaps another or exceeds the buffer of %zu floats", r.begin,
                 r.end, n);
    prev_end = r.end;
  }
  CHORUS_CHECK(cfg.beta1 >= 0 && cfg.beta1 < 1 && cfg.beta2 >= 0 && cfg.beta2 < 1,
               "AdamW: betas must be in [0, 1), got beta1=%g beta2=%g", cfg.beta1, cfg.beta2);
  CHORUS_CHECK(cfg.eps > 0, "AdamW: eps must be > 0, got %g", cfg.eps);
}

void AdamW::update_range(float* p, const float* g, size_t begin, size_t end, float lr, float wd, float bc1,
                         float bc2) {
  size_t pos = begin;
  for (const Range& s : skip_) {
    if (s.end <= pos) continue;
    if (s.begin >= end) break;
    if (pos < s.begin) update_span(p, g, pos, s.begin, lr, wd, bc1, bc2);
    pos = std::max(pos, s.end);
  }
  if (pos < end) update_span(p, g, pos, end, lr, wd, bc1, bc2);
}

void AdamW::update_span(float* p, const float* g, size_t begin, size_t end, float lr, float wd, float bc1,
                        float bc2) {
  const float b1 = cfg_.beta1, b2 = cfg_.beta2, eps = cfg_.eps;
  float* m = m_.data();
  float* v = v_.data();
#pragma omp parallel for simd schedule(static)
  for (size_t i = begin; i < end; ++i) {
    float gi = g[i];
    float mi = b1 * m[i] + (1.0f - b1) * gi;
    float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float mhat = mi / bc1;
    float vhat = vi / bc2;
    p[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * p[i]);
  }
}

void AdamW::update_scaled(float* p, const float* g, size_t begin, size_t end, float lr, float wd, float bc1,
                          float bc2, std::span<const LrScaleRange> lr_scales) {
  size_t pos = begin;
  for (const LrScaleRange& s : lr_scales) {  // sorted by begin, non-overlapping
    const size_t b = std::max(s.range.begin, pos), e = std::min(s.range.end, end);
    if (b >= e) continue;
    if (pos < b) update_range(p, g, pos, b, lr, wd, bc1, bc2);
    update_range(p, g, b, e, lr * s.lr_scale, wd, bc1, bc2);
    pos = e;
  }
  if (pos < end) update_range(p, g, pos, end, lr, wd, bc1, bc2);
}

void AdamW::step(std::span<float> params, std::span<const float> grads, float lr, int64_t t,
                 std::span<const LrScaleRange> lr_scales_in) {
  std::vector<LrScaleRange> lr_scales(lr_scales_in.begin(), lr_scales_in.end());
  std::sort(lr_scales.begin(), lr_scales.end(),
            [](const LrScaleRange& a, const LrScaleRange& b) { return a.range.begin < b.range.begin; });
  for (size_t i = 0; i < lr_scales.size(); ++i) {
    const Range& r = lr_scales[i].range;
    CHORUS_CHECK(r.begin <= r.end && r.end <= m_.size() && (i == 0 || r.begin >= lr_scales[i - 1].range.end),
                 "AdamW: learning-rate range [%zu, %zu) overlaps another or exceeds the buffer of %zu floats",
                 r.begin, r.end, m_.size());
  }
  CHORUS_CHECK(params.size() == m_.size() && grads.size() == m_.size(),
               "AdamW: buffer sizes differ (params %zu, grads %zu, state %zu)", params.size(), grads.size(),
               m_.size());
  CHORUS_CHECK(t >= 1, "AdamW: step count must start at 1, got %lld", static_cast<long long>(t));
  const float bc1 = 1.0f - static_cast<float>(std::pow(static_cast<double>(cfg_.beta1), static_cast<double>(t)));
  const float bc2 = 1.0f - static_cast<float>(std::pow(static_cast<double>(cfg_.beta2), static_cast<double>(t)));
  size_t pos = 0;
  for (const auto& r : decay_) {
    if (pos < r.begin) update_scaled(params.data(), grads.data(), pos, r.begin, lr, 0.0f, bc1, bc2, lr_scales);
    update_scaled(params.data(), grads.data(), r.begin, r.end, lr, cfg_.weight_decay, bc1, bc2, lr_scales);
    pos = r.end;
  }
  if (pos < m_.size()) update_scaled(params.data(), grads.data(), pos, m_.size(), lr, 0.0f, bc1, bc2, lr_scales);
}

double global_norm(std::span<const float> g) {
  double acc = 0.0;
  const float* p = g.data();
  const size_t n = g.size();
#pragma omp parallel for reduction(+ : acc) schedule(static)
  for (size_t i = 0; i < n; ++i) acc += static_cast<double>(p[i]) * p[i];
  return std::sqrt(acc);
}

float clip_by_global_norm(std::span<float> g, double norm, float max_norm) {
  if (max_norm <= 0.0f || !(norm > max_norm)) return 1.0f;
  const float s = static_cast<float>(max_norm / (norm + 1e-6));
  float* p = g.data();
  const size_t n = g.size();
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; ++i) p[i] *= s;
  return s;
}

}  // namespace chorus::optim
