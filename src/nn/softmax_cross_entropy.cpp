// Gradient rule: backward accumulates (+=) into parameter gradients and
// overwrites activation gradients (see softmax_cross_entropy.h).
#include "nn/softmax_cross_entropy.h"

#include <cmath>
#include <cstddef>
#include <cstring>

#include "backend/cpu/vmath.h"

namespace chorus::nn {

namespace cpu = chorus::backend::cpu;

void softmax_cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets,
                                   int N, int V, int Vp) {
#pragma omp parallel for schedule(static) if (static_cast <size_t>(N) * V > (1u << 15))
  for (int r = 0; r < N; ++r) {
    const float* l = logits + static_cast<size_t>(r) * Vp;
    const float mx = cpu::max_of(l, V);
    const float z = mx + std::log(cpu::sum_exp(l, V, mx));
    lse[r] = z;
    losses[r] = targets[r] >= 0 ? z - l[targets[r]] : 0.0f;
  }
}

void softmax_cross_entropy_backward(float* dlogits, const float* logits, const float* lse,
                                    const int32_t* targets, float dloss, int N, int V, int Vp) {
#pragma omp parallel for schedule(static) if (static_cast <size_t>(N) * V > (1u << 15))
  for (int r = 0; r < N; ++r) {
    const float* l = logits + static_cast<size_t>(r) * Vp;
    float* d = dlogits + static_cast<size_t>(r) * Vp;
    const int target = targets[r];
    if (target < 0) {
      std::memset(d, 0, static_cast<size_t>(Vp) * sizeof(float));
      continue;
    }
    cpu::exp_store_scaled(d, l, V, lse[r], dloss);
    d[target] -= dloss;
    for (int v = V; v < Vp; ++v) d[v] = 0.0f;
  }
}

}  // namespace chorus::nn
