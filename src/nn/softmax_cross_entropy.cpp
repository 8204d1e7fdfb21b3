// Gradient rule: backward accumulates (+=) into parameter gradients and
// overwrites activation gradients (see softmax_cross_entropy.h).
#include "nn/softmax_cross_entropy.h"

#include <cmath>
#include <cstddef>
#include <cstring>

#include "backend/cpu/vmath.h"
#include "nn/typed.h"

namespace chorus::nn {

namespace cpu = chorus::backend::cpu;

template <typename T>
void softmax_cross_entropy_forward(float* losses, float* lse, const T* logits, const int32_t* targets, int N,
                                   int V, int Vp) {
#pragma omp parallel for schedule(static) if (static_cast <size_t>(N) * V > (1u << 15))
  for (int r = 0; r < N; ++r) {
    const float* l = f32_rows(logits + static_cast<size_t>(r) * Vp, 1, V, Vp, cpu::thread_scratch(cpu::kScratchRowIn, V)).p;
    const float mx = cpu::max_of(l, V);
    const float z = mx + std::log(cpu::sum_exp(l, V, mx));
    lse[r] = z;
    losses[r] = targets[r] >= 0 ? z - l[targets[r]] : 0.0f;
  }
}

template <typename T>
void softmax_cross_entropy_backward(T* dlogits, const T* logits, const float* lse, const int32_t* targets,
                                    float dloss, int N, int V, int Vp) {
#pragma omp parallel for schedule(static) if (static_cast <size_t>(N) * V > (1u << 15))
  for (int r = 0; r < N; ++r) {
    T* d_t = dlogits + static_cast<size_t>(r) * Vp;
    const int target = targets[r];
    if (target < 0) {
      std::memset(static_cast<void*>(d_t), 0, static_cast<size_t>(Vp) * sizeof(T));
      continue;
    }
    const float* l = f32_rows(logits + static_cast<size_t>(r) * Vp, 1, V, Vp, cpu::thread_scratch(cpu::kScratchRowIn, V)).p;
    float* d = f32_accumulator(d_t, Vp, cpu::kScratchRowOut);
    cpu::exp_store_scaled(d, l, V, lse[r], dloss);
    d[target] -= dloss;
    for (int v = V; v < Vp; ++v) d[v] = 0.0f;
    store_rows(d_t, Vp, d, Vp, 1, Vp);
  }
}

#define CHORUS_INSTANTIATE(T)                                                                                  \
  template void softmax_cross_entropy_forward<T>(float*, float*, const T*, const int32_t*, int, int, int);   \
  template void softmax_cross_entropy_backward<T>(T*, const T*, const float*, const int32_t*, float, int, int, \
                                                  int);
CHORUS_INSTANTIATE(float)
CHORUS_INSTANTIATE(bf16)
CHORUS_INSTANTIATE(fp16)
#undef CHORUS_INSTANTIATE

}  // namespace chorus::nn
