// AdamW (Loshchilov & Hutter 2019) over a flat fp32 parameter buffer: the
// parameters themselves are the fp32 master weights; the first and second
// moments are two more flat buffers of the same length. Weight decay is
// decoupled and applied only to the ranges marked for it (matrices and
// embeddings; never biases or LayerNorm), taken from the model's parameter table.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace chorus::optim {

struct AdamWConfig {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
};

// A half-open range [begin, end) of a flat buffer (e.g. one tensor).
struct Range {
  size_t begin = 0;
  size_t end = 0;
};
using DecayRange = Range;  // a range that weight decay applies to

// A range whose learning rate is lr_scale times the step's (0 = frozen: the
// parameters and their weight decay are not applied; the moments still update).
struct LrScaleRange {
  Range range;
  float lr_scale = 1.0f;
};

class AdamW {
 public:
  // n: length of the parameter buffer; decay: ranges that get weight decay;
  // skip: ranges another optimizer updates (Muon's matrices): step() leaves
  // their parameters and both moments untouched, so m() there is free for
  // that optimizer's own state.
  AdamW(size_t n, std::vector<DecayRange> decay, const AdamWConfig& cfg, std::vector<Range> skip = {});

  // One update with learning rate lr. t is the 1-based count of updates taken
  // so far including this one (bias correction). params -= lr * (m_hat /
  // (sqrt(v_hat) + eps) + wd * params [decayed ranges only]).
  // lr_scales: non-overlapping ranges with their own learning-rate factor
  // (the rest of the buffer: 1).
  void step(std::span<float> params, std::span<const float> grads, float lr, int64_t t,
            std::span<const LrScaleRange> lr_scales = {});

  std::span<float> m() { return m_; }
  std::span<float> v() { return v_; }
  const AdamWConfig& config() const { return cfg_; }
  size_t size() const { return m_.size(); }

 private:
  // update_span over [begin, end) minus the skip ranges.
  void update_range(float* p, const float* g, size_t begin, size_t end, float lr, float wd, float bc1,
                    float bc2);
  void update_span(float* p, const float* g, size_t begin, size_t end, float lr, float wd, float bc1, float bc2);
  // update_range over [begin, end) split where lr_scales change the learning rate.
  void update_scaled(float* p, const float* g, size_t begin, size_t end, float lr, float wd, float bc1, float bc2,
                     std::span<const LrScaleRange> lr_scales);
  AdamWConfig cfg_;
  std::vector<DecayRange> decay_;
  std::vector<Range> skip_;  // sorted, non-overlapping
  std::vector<float> m_, v_;
};

// L2 norm of a gradient buffer (accumulated in double, OpenMP).
double global_norm(std::span<const float> g);
// Scales g by max_norm / norm when norm > max_norm (max_norm <= 0: no clipping).
// Returns the factor applied (1 when not clipped).
float clip_by_global_norm(std::span<float> g, double norm, float max_norm);

}  // namespace chorus::optim
